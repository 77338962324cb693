"""Coarse-to-fine answers, and a frozen copy of a learner to compute them on.

``prediction_paths`` is the one place a prediction document's ``path`` is written: the daemon's
stream answers, ``/predict`` and ``HierarchicalLearner.predict_paths`` all go through it.
``Predictor`` is a learner's network and label tree at one moment: HTTP predictions run on it
so that they never wait for training, and its ``version`` says which training steps it reflects.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from hle_stream.core.hierarchy import LabelTree
from hle_stream.core.inference import level_probabilities
from hle_stream.core.model import HierarchicalNet


@dataclass(frozen=True)
class InputSpec:
    """What a learner takes: the shape of one sample and its dtype (fixed by the first sample)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def prediction_paths(tree: LabelTree, probabilities: list[torch.Tensor], rows: int,
                     threshold: float) -> list[list[dict[str, Any]]]:
    """For each of ``rows`` samples: the best class of each level, coarsest first, stopping before
    the first level whose best probability is below ``threshold`` or not finite (the output is
    strict JSON, never ``NaN``). ``probabilities``: per level, rows × known classes."""
    best = [p.max(dim=1) for p in probabilities]
    paths = []
    for row in range(rows):
        path = []
        for level, (values, indices) in enumerate(best, start=1):
            probability = float(values[row])
            if not math.isfinite(probability) or probability < threshold:
                break
            path.append({"level": level, "label": tree.path_of(level, int(indices[row])), "probability": probability})
        paths.append(path)
    return paths


class Predictor:
    """Network, label tree and version of a learner at one moment; thread-safe to predict with."""

    def __init__(self, net: HierarchicalNet, tree: LabelTree, parents: list[torch.Tensor], input_spec: InputSpec,
                 is_image: bool, decode: str, use_amp: bool, version: int) -> None:
        self.net = copy.deepcopy(net).eval()
        self.tree = tree
        self.parents = parents
        self.input_spec = input_spec
        self.is_image = is_image
        self.decode = decode
        self.use_amp = use_amp
        self.version = version
        self.finite = self.net.finite()

    @property
    def has_classes(self) -> bool:
        return len(self.net.heads) > 0

    def predict_proba(self, x: torch.Tensor) -> list[torch.Tensor]:
        """As ``HierarchicalLearner.predict_proba``, on the frozen weights."""
        if not self.has_classes:
            return []
        return level_probabilities(self.net, x, self.is_image, self.decode, self.parents, self.use_amp)

    def predict_paths(self, x: torch.Tensor, threshold: float) -> list[list[dict[str, Any]]]:
        return prediction_paths(self.tree, self.predict_proba(x), x.shape[0], threshold)
