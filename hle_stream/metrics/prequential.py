"""Prequential (test-then-train) accuracy per level, the live twin of the benchmark's anytime accuracy."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from hle_stream.core.hierarchy import LabelTree


def label_prefixes(path: str) -> list[str]:
    """``a/b/c`` -> ``[a, a/b, a/b/c]``: the label at each level."""
    segments = path.split("/")
    return ["/".join(segments[: i + 1]) for i in range(len(segments))]


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
            for level, prefix in enumerate(label_prefixes(label), start=1):
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
