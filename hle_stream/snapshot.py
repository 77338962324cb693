"""A read-only copy of the model that HTTP predictions run on, so they never wait for training.

The daemon's loop takes a snapshot between micro-batches (at most once per
``--serving-refresh-seconds``), which costs a copy of the weights; ``/predict`` reads the newest
one without a lock. A prediction is therefore at most one refresh period plus one micro-batch
behind the live model, and its ``model_version`` says which steps it reflects.
"""

from __future__ import annotations

import copy

import torch

from hle_stream.hierarchy import LabelTree
from hle_stream.inference import level_probabilities
from hle_stream.learner import HierarchicalLearner
from hle_stream.tree_tables import TreeTables


class ServingSnapshot:
    """Network, label tree and version of a learner at one moment; thread-safe to predict with."""

    def __init__(self, learner: HierarchicalLearner, previous: "ServingSnapshot | None" = None) -> None:
        self.version = learner.steps
        self.input_shape = learner.input_shape
        self.input_dtype = learner.memory.x.dtype
        self.is_image = learner.is_image
        self.decode = learner.config.decode
        self.use_amp = learner.use_amp
        self.net = copy.deepcopy(learner.net).eval()
        if previous is not None and previous.tree.total_classes == learner.tree.total_classes:
            self.tree, self.parents = previous.tree, previous.parents  # classes never change, only grow
        else:
            self.tree = LabelTree.from_state_dict(learner.tree.state_dict())
            self.parents = TreeTables(self.tree, learner.device).parents()
        self.finite = self.net.finite()

    @property
    def has_classes(self) -> bool:
        return len(self.net.heads) > 0

    def predict_proba(self, x: torch.Tensor) -> list[torch.Tensor]:
        """As ``HierarchicalLearner.predict_proba``, on the snapshot's weights."""
        if not self.has_classes:
            return []
        return level_probabilities(self.net, x, self.is_image, self.decode, self.parents, self.use_amp)
