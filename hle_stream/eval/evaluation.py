"""Anytime evaluation on held-out data (A_auc, A_last, F_last per level) and prequential accuracy.

Definitions follow the HLE paper's evaluation (Lee et al., ICCV 2023): every query scores each level's head
on the test samples whose class at that level has been seen; A_auc is the mean over the
periodic queries in which the level existed, A_last the final query, F_last the mean over
classes of (best task-end accuracy before the last task − final accuracy) for classes whose
best accuracy was above 0. ``coarse_from_fine`` scores a coarser level by the ancestor of the
deepest head's prediction: how consistent the fine head is with the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch

from hle_stream.core.hierarchy import LabelTree
from hle_stream.metrics.prequential import label_prefixes


class Predictor(Protocol):
    tree: LabelTree

    def predict(self, x: torch.Tensor) -> list[torch.Tensor]: ...


@dataclass
class Query:
    """One evaluation: stream position, accuracy per level, per-class accuracy per level."""

    position: int
    task_end: bool
    accuracy: dict[int, float]
    class_accuracy: dict[int, dict[str, float]]
    coarse_from_fine: dict[int, float]


@dataclass
class AnytimeEvaluator:
    """Evaluates a learner on ``x_test`` (labels: label paths in the stream's own hierarchy)."""

    x_test: torch.Tensor
    labels_test: Sequence[str]
    queries: list[Query] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._prefixes = [label_prefixes(p) for p in self.labels_test]
        self._depth = max(len(p) for p in self._prefixes)

    def evaluate(self, learner: Predictor, position: int, task_end: bool = False) -> Query:
        tree = learner.tree
        predictions = [p.numpy() for p in learner.predict(self.x_test)]
        accuracy, per_class, from_fine = {}, {}, {}
        deepest = len(predictions)
        for level in range(1, min(deepest, self._depth) + 1):
            truth = np.array([tree.locate(p[level - 1])[1] if len(p) >= level and p[level - 1] in tree else -1
                              for p in self._prefixes])
            known = truth >= 0
            if not known.any():
                continue
            correct = predictions[level - 1][known] == truth[known]
            accuracy[level] = float(correct.mean())
            names = np.array([self._prefixes[i][level - 1] for i in np.flatnonzero(known)])
            per_class[level] = {c: float(correct[names == c].mean()) for c in set(names.tolist())}
            if level < deepest:
                ancestors = np.array(tree.ancestor_table(deepest, level))
                from_fine[level] = float((ancestors[predictions[deepest - 1][known]] == truth[known]).mean())
        query = Query(position, task_end, accuracy, per_class, from_fine)
        self.queries.append(query)
        return query

    def summary(self) -> dict[int, dict[str, float]]:
        """Per level: ``a_auc``, ``a_last``, ``f_last``, ``a_avg`` (task-end mean), ``coarse_from_fine``."""
        periodic = [q for q in self.queries if not q.task_end]
        task_ends = [q for q in self.queries if q.task_end]
        final = self.queries[-1] if self.queries else None
        levels = sorted({lv for q in self.queries for lv in q.accuracy})
        result: dict[int, dict[str, float]] = {}
        for level in levels:
            curve = [q.accuracy[level] for q in periodic if level in q.accuracy]
            ends = [q.accuracy[level] for q in task_ends if level in q.accuracy]
            row = {
                "a_auc": float(np.mean(curve)) if curve else float("nan"),
                "a_last": final.accuracy.get(level, float("nan")) if final else float("nan"),
                "a_avg": float(np.mean(ends)) if ends else float("nan"),
                "f_last": self._forgetting(level, task_ends),
            }
            if final and level in final.coarse_from_fine:
                row["coarse_from_fine"] = final.coarse_from_fine[level]
            result[level] = row
        return result

    @staticmethod
    def _forgetting(level: int, task_ends: list[Query]) -> float:
        if len(task_ends) < 2:
            return float("nan")
        final = task_ends[-1].class_accuracy.get(level, {})
        drops = []
        for cls, last in final.items():
            best = max((q.class_accuracy.get(level, {}).get(cls, 0.0) for q in task_ends[:-1]), default=0.0)
            if best > 0:
                drops.append(best - last)
        return float(np.mean(drops)) if drops else float("nan")
