"""What the daemon's live page (``GET /``) shows, kept as it learns and served as ``/live.json``.

The page is for a person watching a run: prequential accuracy per level over time with the
moments new classes appeared, the label tree with counts and per-class accuracy, the replay
memory per level, events/s and lag, and the last predictions with their served paths. The
history is sampled every ``SAMPLE_S`` into a bounded ring (``HISTORY_POINTS``: an hour at that
pace), so a long-running daemon holds a fixed amount of it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from connectors.ports import Record, Sink
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.metrics.prequential import PrequentialAccuracy

SAMPLE_S = 2.0
HISTORY_POINTS = 1800
RECENT_PREDICTIONS = 20
CLASSES_SHOWN = 50  # per level; /classes pages through the rest


class LiveView:
    def __init__(self) -> None:
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.expansions: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.predictions: deque[dict[str, Any]] = deque(maxlen=RECENT_PREDICTIONS)
        self._classes: tuple[int, ...] = ()
        self._sampled_at = float("-inf")
        self._consumed = 0

    def sample(self, prequential: PrequentialAccuracy, learner: HierarchicalLearner | None, consumed: int,
               lag: int | None, now: float | None = None) -> None:
        """A point of the history (at most every ``SAMPLE_S``; events/s over the time since the
        last), and the classes that appeared since the last call."""
        now = time.time() if now is None else now
        tree = learner.tree if learner is not None else None
        classes = tuple(tree.num_classes(lv) for lv in range(1, tree.depth + 1)) if tree is not None else ()
        for level, count in enumerate(classes, start=1):
            before = self._classes[level - 1] if level <= len(self._classes) else 0
            if count > before:
                self.expansions.append({"t": now, "level": level, "new_classes": count - before})
        self._classes = classes
        if now - self._sampled_at < SAMPLE_S:
            return
        rate = (consumed - self._consumed) / (now - self._sampled_at) if self.history else 0.0
        self._sampled_at, self._consumed = now, consumed
        self.history.append({"t": now, "accuracy": {str(lv): round(v, 4) for lv, v in
                                                    prequential.rolling_accuracy().items()},
                             "events_per_second": round(rate, 1), "lag": lag})

    def watching(self, sink: Sink) -> "_Tee":
        """``sink``, with each prediction also kept among the recent ones."""
        return _Tee(sink, self.predictions)

    def document(self, learner: HierarchicalLearner | None, prequential: PrequentialAccuracy,
                 model_version: int, class_report) -> dict[str, Any]:
        """What ``/live.json`` answers (``class_report``: ``hle_stream.service.serving.class_report``)."""
        stats = learner.stats() if learner is not None else None
        last = self.history[-1] if self.history else {}
        return {"now": time.time(), "model_version": model_version,
                "accuracy": {str(lv): v for lv, v in prequential.rolling_accuracy().items()},
                "events_per_second": last.get("events_per_second"), "lag": last.get("lag"),
                "learned": stats.seen if stats else 0,
                "memory": {"size": stats.memory_size if stats else 0, "capacity": stats.memory_capacity if stats else 0,
                           "per_level": {str(lv): n for lv, n in sorted(stats.memory_per_level.items())}
                           if stats else {}},
                "history": list(self.history), "expansions": list(self.expansions),
                "tree": class_report(learner, prequential, 0, 0, CLASSES_SHOWN),
                "predictions": list(self.predictions)}


class _Tee:
    """A sink that forwards everything and keeps the predictions it passes on."""

    def __init__(self, sink: Sink, kept: deque[dict[str, Any]]) -> None:
        self.sink, self.kept = sink, kept

    def prediction(self, document: dict[str, Any]) -> None:
        self.kept.append(document)
        self.sink.prediction(document)

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.sink.dead_letter(record, reason, detail)
