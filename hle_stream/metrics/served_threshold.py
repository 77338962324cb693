"""The confidence threshold that makes served paths as precise as asked (``--target-precision``).

A served path stops at the first level whose probability is below the threshold: a higher
threshold serves fewer, surer nodes. Which threshold gives, say, 95 % of served nodes right
depends on the data, the model and how far learning has come (on the bench, the final model
needs 0.7 on one dataset and over 0.99 on another), so no fixed value fits every deployment.
The daemon has the labels: for every labelled event it keeps, per level of the predicted path,
the probability the node would be served at (the smallest of the path's probabilities down to
it: the path stops at the first one below the threshold) and whether the label confirms it,
over a window of recent nodes, and serves with the lowest candidate threshold whose precision
over that window reaches the target: the deepest paths that are still that precise. Until the
window holds ``min_nodes`` judged nodes it serves with the fixed ``--confidence-threshold``.
The window is short because a new, finer level makes the recent nodes harder than the window's
older ones: a longer window lets precision fall below the target in the quarter of the stream a
level arrives (``benchmarks/served_threshold.py`` measures it; figures in benchmarks/README.md).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Sequence

import numpy as np

DEFAULT_CONFIDENCE_THRESHOLD = 0.5
"""Where a path stops when no threshold is set or calibrated yet."""

CANDIDATES = tuple(k / 100 for k in range(100)) + (0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 0.999995,
                                                    0.999999)
"""Thresholds tried, lowest first; when none reaches the target, the last (the surest nodes only).
Finer toward 1, where a confident model's probabilities crowd: on 20 Newsgroups even the nodes
served at 0.999 fell short of a 0.95 target in some quarters (``benchmarks/served_threshold.py``)."""


class PrecisionTargetThreshold:
    """The lowest ``CANDIDATES`` threshold whose served-node precision over the last ``window``
    judged nodes reaches ``target``; chosen again every ``every`` labelled events."""

    def __init__(self, target: float, fallback: float, window: int = 2000, min_nodes: int = 500,
                 every: int = 100) -> None:
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target precision {target} is not in (0, 1]")
        self.target, self.fallback = target, fallback
        self.min_nodes, self.every = min_nodes, every
        self.values: deque[float] = deque(maxlen=window)  # per judged node: served while threshold <= value
        self.correct: deque[bool] = deque(maxlen=window)
        self.threshold = fallback
        self._since_choice = 0

    def record(self, probabilities: Sequence[float], correct: Sequence[bool]) -> None:
        """One labelled event: the best class's probability at each level of its predicted path
        (coarsest first) and, for the levels the label names, whether the label confirms it."""
        running = math.inf
        for probability, ok in zip(probabilities, correct):
            running = min(running, probability if math.isfinite(probability) else -math.inf)
            self.values.append(running)
            self.correct.append(bool(ok))
        self._since_choice += 1
        if self._since_choice >= self.every:
            self.choose()

    def choose(self) -> float:
        """Set (and return) the threshold from the nodes in the window."""
        self._since_choice = 0
        if len(self.values) < self.min_nodes:
            self.threshold = self.fallback
            return self.threshold
        values = np.fromiter(self.values, dtype=np.float64, count=len(self.values))
        correct = np.fromiter(self.correct, dtype=bool, count=len(self.correct))
        candidates = np.asarray(CANDIDATES)
        served = values[None, :] >= candidates[:, None]
        counts = served.sum(axis=1)
        hits = (served & correct[None, :]).sum(axis=1)
        meets = (counts > 0) & (hits >= self.target * counts)
        self.threshold = float(candidates[int(np.argmax(meets))] if meets.any() else candidates[-1])
        return self.threshold

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "correct": list(self.correct)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved window, the threshold chosen from it with this target (a restart may change it)."""
        self.values.clear()
        self.correct.clear()
        self.values.extend(float(v) for v in state["values"])
        self.correct.extend(bool(c) for c in state["correct"])
        self.choose()
