"""The learning core, no I/O: the hierarchical learner, its methods and options by name, and its
parts (memory policy, stream sampler, supervision, augmentation, learning rate, second expert)
on the model, the replay memory and the label tree."""
