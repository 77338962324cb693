"""How what the daemon served fares against the labels, as they come: prequential accuracy per
level, the quality of the served paths, the confidence threshold calibrated from them to a
target precision, and drift on the prequential error. One part of the micro-batch step
(``hle_stream.service.processing``), part of its checkpoint.

A label that travels with its event scores the prediction made just before the event is learned;
a label that comes later (a label event) scores the prediction served when its event came, and a
finer label later still scores only the levels it adds.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from connectors.ports import Record
from hle_stream.core.hierarchy import SEPARATOR, LabelTree
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.metrics.served_paths import ServedPathQuality
from hle_stream.metrics.served_threshold import PrecisionTargetThreshold
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.drift import DriftMonitor
from hle_stream.service.telemetry import NoTelemetry, Telemetry

log = logging.getLogger(__name__)


class Scoring:
    """Owns the prequential accuracy, the served-path quality, the threshold calibration and the
    drift monitor (``None``: metrics off)."""

    def __init__(self, config: ProcessingConfig, drift: DriftMonitor | None, telemetry: Telemetry | NoTelemetry) -> None:
        self.config = config
        self.drift = drift
        self.telemetry = telemetry
        self.prequential = PrequentialAccuracy()
        self.served_paths = ServedPathQuality()
        self.served_threshold = (PrecisionTargetThreshold(config.target_precision, config.confidence_threshold)
                                 if config.target_precision > 0 else None)

    @property
    def confidence_threshold(self) -> float:
        """Where served paths stop now: the fixed threshold, or the one calibrated to the target precision."""
        return self.config.confidence_threshold if self.served_threshold is None else self.served_threshold.threshold

    def served(self, tree: LabelTree, labels: Sequence[str], paths: Sequence[list[dict[str, Any]]],
               confidences: Sequence[Sequence[float]], guesses: Sequence[Sequence[int]],
               probabilities: list[torch.Tensor], records: Sequence[Record]) -> None:
        """The labelled events of a batch, each with the path just served for it: ``confidences`` and
        ``guesses`` per event (each level's best), ``probabilities`` per level (events × classes)."""
        for label, path, event_confidences, event_guesses in zip(labels, paths, confidences, guesses):
            self.served_paths.update([node["label"] for node in path], label)
            self._calibrate(tree, event_confidences, event_guesses, label)
        outcomes = self.prequential.update(tree, list(labels), [p.argmax(dim=1) for p in probabilities])
        self._watch_drift(outcomes, records)

    def delayed(self, tree: LabelTree, label: str, record: Record, guesses: list[int], confidences: list[float],
                served_path: list[str] | None, from_level: int) -> None:
        """A label event for an event predicted earlier (``guesses``, ``confidences``: what was served
        then): scored at ``from_level`` and below; ``served_path`` is judged on the first label only
        (``None`` for a finer one)."""
        outcomes = self.prequential.update(tree, [label], [torch.tensor([guess]) for guess in guesses], from_level)
        self._watch_drift(outcomes, [record])
        if served_path is not None:
            self.served_paths.update(served_path, label)
            self._calibrate(tree, confidences, guesses, label)

    def _calibrate(self, tree: LabelTree, confidences: Sequence[float], guesses: Sequence[int], label: str) -> None:
        """Tell the threshold calibration how the path predicted for a labelled event fared."""
        if self.served_threshold is None:
            return
        truth = label.split(SEPARATOR)
        correct = [tree.path_of(level, guess) == SEPARATOR.join(truth[:level])
                   for level, guess in enumerate(guesses[:len(truth)], start=1)]
        self.served_threshold.record(list(confidences), correct)

    def _watch_drift(self, outcomes: list, records: Sequence[Record]) -> None:
        if self.drift is None:
            return
        for outcome in self.drift.update(outcomes):
            record = records[outcome.sample]
            log.warning("drift detected on level %d's prequential error at %s[%d]@%d", outcome.level, record.topic,
                        record.partition, record.offset)
            self.telemetry.record_drift(outcome.level)

    # -- state (part of the processor's, under its historical keys) ----------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"prequential": self.prequential.state_dict(), "served_paths": self.served_paths.state_dict(),
                "served_threshold": self.served_threshold.state_dict() if self.served_threshold else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prequential = PrequentialAccuracy.from_state_dict(state["prequential"])
        if "served_paths" in state:  # checkpoints before served-path quality have none
            self.served_paths = ServedPathQuality.from_state_dict(state["served_paths"])
        if self.served_threshold is not None and state.get("served_threshold"):  # absent before calibration
            self.served_threshold.load_state_dict(state["served_threshold"])
