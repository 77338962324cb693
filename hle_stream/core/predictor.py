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
from torch import nn

from hle_stream.core.backbones import build_backbone
from hle_stream.core.discriminant import LinearDiscriminant
from hle_stream.core.hierarchy import LabelTree
from hle_stream.core.inference import level_probabilities
from hle_stream.core.model import HierarchicalNet
from hle_stream.core.tree_tables import TreeTables

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class InputSpec:
    """What a learner takes: the shape of one sample and its dtype (fixed by the first sample)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def prediction_paths(tree: LabelTree, probabilities: list[torch.Tensor], rows: int,
                     threshold: float) -> list[list[dict[str, Any]]]:
    """For each of ``rows`` samples a path of the tree, coarsest first: level 1's most probable
    class, then at each finer level the most probable child of the class chosen above (so ``a``
    is never followed by ``b/z``), stopping before the first level whose chosen probability is
    below ``threshold`` or not finite (the output is strict JSON, never ``NaN``), or where the
    chosen class has no children. ``probabilities``: per level, rows × known classes."""
    chosen: list[tuple[torch.Tensor, torch.Tensor]] = []  # per level: (probability, index) per row
    for level, p in enumerate(probabilities, start=1):
        if level == 1:
            chosen.append(p.max(dim=1))
            continue
        parent_of = torch.tensor([tree.parent_index(level, i) for i in range(p.shape[1])], dtype=torch.long)
        is_child = parent_of.unsqueeze(0) == chosen[-1][1].unsqueeze(1)  # rows × classes of this level
        chosen.append(torch.where(is_child, p, torch.full_like(p, -1.0)).max(dim=1))  # -1: no child
    paths = []
    for row in range(rows):
        path = []
        for level, (values, indices) in enumerate(chosen, start=1):
            probability = float(values[row])
            if not math.isfinite(probability) or probability < max(threshold, 0.0):
                break
            path.append({"level": level, "label": tree.path_of(level, int(indices[row])), "probability": probability})
        paths.append(path)
    return paths


class Predictor:
    """Network, label tree and version of a learner at one moment; thread-safe to predict with."""

    def __init__(self, net: HierarchicalNet, tree: LabelTree, parents: list[torch.Tensor], input_spec: InputSpec,
                 is_image: bool, decode: str, use_amp: bool, version: int, backbone: str,
                 discriminant: LinearDiscriminant | None = None, discriminant_weight: float = 0.0) -> None:
        self.net = copy.deepcopy(net).eval()
        self.discriminant = discriminant
        self.discriminant_weight = discriminant_weight
        self.backbone = backbone
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
        return level_probabilities(self.net, x, self.is_image, self.decode, self.parents, self.use_amp,
                                   discriminant=self.discriminant, discriminant_weight=self.discriminant_weight)

    def predict_paths(self, x: torch.Tensor, threshold: float) -> list[list[dict[str, Any]]]:
        return prediction_paths(self.tree, self.predict_proba(x), x.shape[0], threshold)

    # -- serving snapshots: what a predictor replica loads -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, label tree and version only (no optimizer, no memory): small, and loadable
        with ``torch.load(..., weights_only=True)``."""
        return {"snapshot_format": SNAPSHOT_FORMAT, "backbone": self.backbone,
                "input_shape": list(self.input_spec.shape),
                "input_dtype": str(self.input_spec.dtype).removeprefix("torch."), "decode": self.decode,
                "tree": self.tree.state_dict(), "head_sizes": self.net.head_sizes(),
                "net": {name: value.detach().cpu() for name, value in self.net.state_dict().items()},
                "version": self.version,
                "discriminant": None if self.discriminant is None else self.discriminant.state_dict(),
                "discriminant_weight": self.discriminant_weight}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str = "cpu") -> "Predictor":
        if state.get("snapshot_format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {state.get('snapshot_format')!r} is not {SNAPSHOT_FORMAT}")
        shape = tuple(int(s) for s in state["input_shape"])
        net = HierarchicalNet(build_backbone(state["backbone"], shape))
        for size in state["head_sizes"]:
            net.heads.append(nn.Linear(net.feature_dim, size))
        net.load_state_dict(state["net"])
        is_image = len(shape) == 3
        if is_image:
            net = net.to(memory_format=torch.channels_last)
        tree = LabelTree.from_state_dict(state["tree"])
        target = torch.device(device)
        return cls(net.to(target), tree, TreeTables(tree, target).parents(),
                   InputSpec(shape, getattr(torch, state["input_dtype"])), is_image, state["decode"],
                   use_amp=False, version=int(state["version"]), backbone=state["backbone"],
                   discriminant=LinearDiscriminant.from_state_dict(state["discriminant"])
                   if state.get("discriminant") is not None else None,
                   discriminant_weight=float(state.get("discriminant_weight", 0.0)))
