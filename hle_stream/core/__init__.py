"""The learning core: the hierarchical learner and its parts (model, replay memory, importance, adaptive LR, label tree). No I/O."""
