"""The quality of the coarse-to-fine path a user is served, judged against the label.

The daemon serves, per event, the best class of each level from the coarsest down, stopping
at the first level whose probability is below ``--confidence-threshold``. What a user of that
path cares about is not per-level accuracy but:

- **served-node precision**: of the nodes served (at levels the label names), the share that
  are right; a high threshold serves fewer, surer nodes;
- **mean served depth**: how many levels a path has on average (an empty path is depth 0);
- **mistake severity**: when the deepest judged node of a path is wrong, its distance in the
  tree to the true node of that level, in edges (2 for a sibling, 4 for a cousin, ...): a
  wrong ``animal/dog/terrier`` for ``animal/dog/poodle`` is a milder mistake than one for
  ``plant/tree/oak``.

A served node deeper than the label (a finer class for a label that stops above it) cannot
be judged: it counts in the depth, not in precision or severity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from hle_stream.core.hierarchy import SEPARATOR, LabelTree
from hle_stream.core.predictor import prediction_paths


def tree_distance(a: str, b: str) -> int:
    """Edges between two nodes of the same level: up to their deepest common ancestor and down."""
    left, right = a.split(SEPARATOR), b.split(SEPARATOR)
    common = 0
    for x, y in zip(left, right):
        if x != y:
            break
        common += 1
    return len(left) - common + len(right) - common


@dataclass
class ServedPathQuality:
    """Running totals over served paths; ``update`` once per labelled event."""

    paths: int = 0
    depth_sum: int = 0
    nodes: int = 0  # served nodes at levels the label names
    correct_nodes: int = 0
    wrong_paths: int = 0  # paths whose deepest judged node is wrong
    severity_sum: int = 0

    def update(self, served: Sequence[str], label: str) -> None:
        """``served``: the served nodes' label paths, coarsest first; ``label``: the true path."""
        truth = label.split(SEPARATOR)
        self.paths += 1
        self.depth_sum += len(served)
        judged = list(served[: len(truth)])
        for level, node in enumerate(judged, start=1):
            self.nodes += 1
            self.correct_nodes += node == SEPARATOR.join(truth[:level])
        if judged and judged[-1] != SEPARATOR.join(truth[: len(judged)]):
            self.wrong_paths += 1
            self.severity_sum += tree_distance(judged[-1], SEPARATOR.join(truth[: len(judged)]))

    @property
    def precision(self) -> float | None:
        return self.correct_nodes / self.nodes if self.nodes else None

    @property
    def mean_depth(self) -> float | None:
        return self.depth_sum / self.paths if self.paths else None

    @property
    def mistake_severity(self) -> float | None:
        return self.severity_sum / self.wrong_paths if self.wrong_paths else None

    def summary(self) -> dict[str, float | None]:
        return {"precision": self.precision, "mean_depth": self.mean_depth, "mistake_severity": self.mistake_severity}

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, int]) -> "ServedPathQuality":
        return cls(**state)


THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
"""The confidence thresholds the benchmark sweeps."""


def threshold_curve(tree: LabelTree, probabilities: list[torch.Tensor], labels: Sequence[str],
                    thresholds: Sequence[float] = THRESHOLDS) -> dict[str, dict[str, float | None]]:
    """Served-path quality at each threshold for one model's ``probabilities`` (per level,
    samples × known classes) on samples labelled ``labels``, the paths built as the daemon
    builds them."""
    curve = {}
    for threshold in thresholds:
        quality = ServedPathQuality()
        for path, label in zip(prediction_paths(tree, probabilities, len(labels), threshold), labels):
            quality.update([node["label"] for node in path], label)
        curve[f"{threshold:g}"] = quality.summary()
    return curve


def recommended_threshold(curve: dict[str, dict[str, float | None]], precision: float = 0.95) -> str | None:
    """The lowest threshold (the deepest paths) whose served-node precision reaches ``precision``."""
    for threshold, row in sorted(curve.items(), key=lambda item: float(item[0])):
        if row["precision"] is not None and row["precision"] >= precision:
            return threshold
    return None
