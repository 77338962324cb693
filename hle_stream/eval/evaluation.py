"""Anytime evaluation on held-out data (A_auc, A_last, F_last per level) and prequential accuracy.

Definitions follow the HLE paper's evaluation (Lee et al., ICCV 2023): every query scores each level's head
on the test samples whose class at that level has been seen; A_auc is the mean over the
periodic queries in which the level existed, A_last the final query, F_last the mean over
classes of (best task-end accuracy before the last task − final accuracy) for classes whose
best accuracy was above 0. ``coarse_from_fine`` scores a coarser level by the ancestor of the
deepest head's prediction: how consistent the fine head is with the tree.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from hle_stream.core.hierarchy import LabelTree


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


def _prefixes(path: str) -> list[str]:
    segments = path.split("/")
    return ["/".join(segments[: i + 1]) for i in range(len(segments))]


@dataclass
class AnytimeEvaluator:
    """Evaluates a learner on ``x_test`` (labels: label paths in the stream's own hierarchy)."""

    x_test: torch.Tensor
    labels_test: Sequence[str]
    queries: list[Query] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._prefixes = [_prefixes(p) for p in self.labels_test]
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


@dataclass(frozen=True)
class Outcome:
    """One labelled sample scored at one level: ``truth``/``guess`` are class indices (-1: the
    class is new, -2: the model has no head at that level yet)."""

    sample: int
    level: int
    truth: int
    guess: int

    @property
    def correct(self) -> bool:
        return self.truth == self.guess


class PrequentialAccuracy:
    """Test-then-train accuracy per level: each labelled sample is predicted before it is learned.

    A sample labelled ``a/b/c`` scores levels 1-3 against its ancestors; a class the model has
    not met yet counts as a miss. Keeps a rolling window (a deque and its count of hits: river's
    ``Rolling(Accuracy)`` computes the same, but importing river.metrics loads scipy.stats, 1.3 s
    of the daemon's start), the running total,
    the anytime average (the mean of the rolling accuracy after each sample: the area under the
    prequential curve, A_auc's online twin) and per-class counts for the per-class report.
    ``state_dict`` / ``load_state_dict`` carry all of it through a checkpoint as plain data.
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.recent: dict[int, deque[tuple[int, int]]] = {}  # the rolling window's (truth, guess) pairs
        self.recent_correct: dict[int, int] = {}  # hits among them
        self.total: dict[int, list[int]] = {}  # level -> [correct, scored]
        self.anytime: dict[int, list[float]] = {}  # level -> [sum of rolling accuracies, count]
        self.per_class: dict[tuple[int, int], list[int]] = {}  # (level, class index) -> [correct, seen]

    def update(self, tree: LabelTree, labels: Sequence[str], predictions: list[torch.Tensor],
               from_level: int = 1) -> list[Outcome]:
        """Score a batch at the levels ``from_level`` and below (a refined label scores only the
        levels it adds); returns each (sample, level) outcome for drift detection."""
        guesses = [p.tolist() for p in predictions]
        outcomes = []
        for i, label in enumerate(labels):
            for level, prefix in enumerate(_prefixes(label), start=1):
                if level < from_level:
                    continue
                truth = tree.locate(prefix)[1] if prefix in tree else -1
                guess = guesses[level - 1][i] if level <= len(guesses) else -2
                self._score(level, truth, guess)
                outcomes.append(Outcome(i, level, truth, guess))
        return outcomes

    def _score(self, level: int, truth: int, guess: int) -> None:
        if level not in self.total:
            self.recent[level] = deque(maxlen=self.window)
            self.recent_correct[level] = 0
            self.total[level] = [0, 0]
            self.anytime[level] = [0.0, 0]
        self._roll(level, truth, guess)
        total = self.total[level]
        total[0] += truth == guess
        total[1] += 1
        anytime = self.anytime[level]
        anytime[0] += self.recent_correct[level] / len(self.recent[level])
        anytime[1] += 1
        if truth >= 0:
            counts = self.per_class.setdefault((level, truth), [0, 0])
            counts[0] += truth == guess
            counts[1] += 1

    def _roll(self, level: int, truth: int, guess: int) -> None:
        window = self.recent[level]
        if len(window) == window.maxlen:
            old_truth, old_guess = window[0]
            self.recent_correct[level] -= old_truth == old_guess
        window.append((truth, guess))
        self.recent_correct[level] += truth == guess

    def rolling_accuracy(self) -> dict[int, float]:
        return {level: self.recent_correct[level] / len(pairs) for level, pairs in sorted(self.recent.items())}

    def running_accuracy(self) -> dict[int, float]:
        return {level: correct / scored for level, (correct, scored) in sorted(self.total.items())}

    def anytime_accuracy(self) -> dict[int, float]:
        return {level: total / count for level, (total, count) in sorted(self.anytime.items())}

    def class_accuracy(self, level: int, index: int) -> tuple[int, int]:
        """(correct, seen) prequential counts of one class; (0, 0) before it was seen."""
        correct, seen = self.per_class.get((level, index), (0, 0))
        return correct, seen

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window,
                "recent": {level: [list(pair) for pair in pairs] for level, pairs in self.recent.items()},
                "total": {level: list(v) for level, v in self.total.items()},
                "anytime": {level: list(v) for level, v in self.anytime.items()},
                "per_class": [[level, index, *counts] for (level, index), counts in self.per_class.items()]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "PrequentialAccuracy":
        metric = cls(state["window"])
        for level, pairs in state["recent"].items():
            level = int(level)
            metric.recent[level] = deque(maxlen=metric.window)
            metric.recent_correct[level] = 0
            for truth, guess in pairs:
                metric._roll(level, int(truth), int(guess))
        metric.total = {int(level): list(v) for level, v in state["total"].items()}
        metric.anytime = {int(level): list(v) for level, v in state["anytime"].items()}
        metric.per_class = {(level, index): [correct, seen] for level, index, correct, seen in state["per_class"]}
        return metric
