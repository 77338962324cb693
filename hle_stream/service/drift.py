"""Concept-drift detection on the prequential error, one river ADWIN per hierarchy level.

A label expansion is a planned drift (new classes arrive), but accuracy can also fall because the
data itself changed; ADWIN flags a significant change in the mean error of a level's recent
window, which is what an operator wants to see next to the expansion markers.
"""

from __future__ import annotations

from typing import Iterable

from river import drift

from hle_stream.eval.evaluation import Outcome


class DriftMonitor:
    """Feeds each (sample, level) outcome's error to that level's ADWIN."""

    def __init__(self, delta: float = 0.002) -> None:
        self.delta = delta
        self.detectors: dict[int, drift.ADWIN] = {}

    def update(self, outcomes: Iterable[Outcome]) -> list[Outcome]:
        """The outcomes at which a level's detector fired (at most one per level and call)."""
        fired: dict[int, Outcome] = {}
        for outcome in outcomes:
            detector = self.detectors.get(outcome.level)
            if detector is None:
                detector = self.detectors[outcome.level] = drift.ADWIN(delta=self.delta)
            detector.update(0.0 if outcome.correct else 1.0)
            if detector.drift_detected and outcome.level not in fired:
                fired[outcome.level] = outcome
        return list(fired.values())
