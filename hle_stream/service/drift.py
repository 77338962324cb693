"""Concept-drift detection on the prequential error, one river ADWIN per hierarchy level.

A label expansion is a planned drift (new classes arrive), but accuracy can also fall because the
data itself changed; ADWIN flags a significant change in the mean error of a level's recent
window, which is what an operator wants to see next to the expansion markers.

Importing river takes about 1.5 s (it loads scipy.stats); the monitor loads it in a thread of
its own from the moment it is made, which in the daemon is while the consumer joins its group
and the main thread mostly waits on the network, so that it stays off the start-up path.
"""

from __future__ import annotations

from typing import Any, Iterable

from hle_stream.metrics.prequential import Outcome
from hle_stream.service.background_import import BackgroundImport


class DriftMonitor:
    """Feeds each (sample, level) outcome's error to that level's ADWIN."""

    def __init__(self, delta: float = 0.002) -> None:
        self.delta = delta
        self.detectors: dict[int, Any] = {}  # level -> river.drift.ADWIN
        self._river_drift = BackgroundImport("river.drift")

    def update(self, outcomes: Iterable[Outcome]) -> list[Outcome]:
        """The outcomes at which a level's detector fired (at most one per level and call)."""
        fired: dict[int, Outcome] = {}
        for outcome in outcomes:
            detector = self.detectors.get(outcome.level)
            if detector is None:
                detector = self.detectors[outcome.level] = self._adwin()
            detector.update(0.0 if outcome.correct else 1.0)
            if detector.drift_detected and outcome.level not in fired:
                fired[outcome.level] = outcome
        return list(fired.values())

    def _adwin(self) -> Any:
        return self._river_drift.module().ADWIN(delta=self.delta)
