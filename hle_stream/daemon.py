"""The streaming daemon: consume, predict, publish, learn, checkpoint, commit.

Offsets are committed only after the checkpoint that covers them is on disk, and a restart
resumes from the offsets stored in the checkpoint, so the model's lineage trains each event
once; predictions between the last checkpoint and a crash are sent again (at-least-once
output, ``id`` is the dedupe key).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from connectors.kafka_io import Publisher, commit_offsets, open_consumer
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.checkpoint import CheckpointStore
from hle_stream.config import LearnerConfig, method_config
from hle_stream.device import pick_device
from hle_stream.drift import DriftMonitor
from hle_stream.evaluation import PrequentialAccuracy
from hle_stream.events import Event, EventError, parse_event, prediction_path
from hle_stream.hierarchy import LabelPathError
from hle_stream.learner import HierarchicalLearner
from hle_stream.learner_state import learner_state, restore_learner
from hle_stream.telemetry import Telemetry

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class DaemonConfig:
    input_topic: str = "hle-events"
    predictions_topic: str = "hle-predictions"
    dead_letter_topic: str = "hle-dead-letters"
    group_id: str = "hle-stream"
    checkpoint_dir: Path = Path("checkpoints")
    checkpoint_every_events: int = 5000
    checkpoint_every_seconds: float = 60.0
    max_batch: int = 64
    confidence_threshold: float = 0.5
    max_message_bytes: int = 4 << 20
    max_events: int | None = None  # stop after consuming this many (demos, tests)
    report_every_events: int = 1000
    http_host: str = "127.0.0.1"
    http_port: int | None = 8080  # None: no HTTP server
    metrics: bool = True  # Prometheus series on /metrics and ADWIN drift detection
    method: str = "pl-fms"
    learner: LearnerConfig = field(default_factory=LearnerConfig)


ProgressReport = Callable[[int, int, dict[int, float]], None]  # consumed, dead letters, rolling accuracy


class Daemon:
    def __init__(self, settings: KafkaSettings, config: DaemonConfig, report: ProgressReport | None = None) -> None:
        self.settings = settings
        self.config = config
        self.report = report
        self.store = CheckpointStore(config.checkpoint_dir)
        self.learner: HierarchicalLearner | None = None
        self.next_offsets: dict[int, int] = {}
        self.prequential = PrequentialAccuracy()
        self.consumed = 0
        self.dead_letters = 0
        self._stop = False
        self._last_reported = -1
        # HTTP predictions read the learner while the loop trains it.
        self.lock = threading.Lock()
        self.last_tick = time.monotonic()
        self.first_record_at: float | None = None  # monotonic time of the first event (throughput)
        self.confidence_threshold = config.confidence_threshold
        self.telemetry = (Telemetry(config.learner.max_depth, config.method, pick_device(config.learner.device).type)
                          if config.metrics else None)
        self.drift = DriftMonitor() if config.metrics else None

    def request_stop(self) -> None:
        """Finish the batch in hand, checkpoint, commit, close (SIGTERM)."""
        self._stop = True

    def run(self) -> None:
        self._restore()
        cfg = self.config
        ensure_topics(self.settings, {cfg.input_topic: 1, cfg.predictions_topic: 1, cfg.dead_letter_topic: 1})
        consumer = open_consumer(self.settings, cfg.group_id, cfg.input_topic, lambda: dict(self.next_offsets))
        self.publisher = Publisher(self.settings, cfg.predictions_topic, cfg.dead_letter_topic)
        server = None
        if cfg.http_port is not None:
            from hle_stream.serving import HttpServer

            server = HttpServer(self, cfg.http_host, cfg.http_port)
            server.start()
        since_checkpoint, last_checkpoint, next_report = 0, time.monotonic(), cfg.report_every_events
        try:
            while not self._stop and (cfg.max_events is None or self.consumed < cfg.max_events):
                limit = cfg.max_batch if cfg.max_events is None else min(cfg.max_batch, cfg.max_events - self.consumed)
                batches = consumer.poll(timeout_ms=500, max_records=limit)
                records = [r for part in batches.values() for r in part]
                self.last_tick = time.monotonic()
                if records and self.first_record_at is None:
                    self.first_record_at = self.last_tick
                with self.lock:
                    self._process(records)
                if self.telemetry is not None:
                    self.telemetry.record_consumed(len(records))
                    self.telemetry.record_lag(_lag(consumer, self.next_offsets))
                    self.telemetry.refresh(self.learner, self.prequential)
                since_checkpoint += len(records)
                if since_checkpoint and (since_checkpoint >= cfg.checkpoint_every_events
                                         or time.monotonic() - last_checkpoint >= cfg.checkpoint_every_seconds):
                    self._checkpoint_and_commit(consumer)
                    since_checkpoint, last_checkpoint = 0, time.monotonic()
                if self.consumed >= next_report:
                    self._report()
                    next_report += cfg.report_every_events
        finally:
            self._checkpoint_and_commit(consumer)
            if self.consumed != self._last_reported:
                self._report()
            consumer.close()
            self.publisher.close()
            if server is not None:
                server.stop()

    # -- one micro-batch: predict every event, then learn from the labelled ones ------------
    def _process(self, records: list) -> None:
        events, sources = [], []
        for record in records:
            self.consumed += 1
            self.next_offsets[record.partition] = record.offset + 1
            try:
                event = parse_event(record.value, self.learner.input_shape if self.learner else None,
                                    self.learner.tree if self.learner else None, self.config.max_message_bytes)
                if events and event.x.shape != events[0].x.shape:
                    raise EventError("wrong_shape", f"shape {event.x.shape} differs from {events[0].x.shape} in the batch")
            except EventError as err:
                self._dead_letter(record, err.reason, str(err))
                continue
            events.append(event)
            sources.append(record)
        if not events:
            return
        if self.learner is None:
            shape, dtype = events[0].x.shape, torch.from_numpy(events[0].x[:0]).dtype
            self.learner = HierarchicalLearner(method_config(self.config.method, self.config.learner), shape, dtype)
            log.info("learner created for inputs of shape %s (%s), method %s", shape, dtype, self.config.method)
        x = torch.from_numpy(np.stack([e.x for e in events]))
        self._predict_and_publish(events, sources, x)
        self._learn(events, sources, x)

    def _predict_and_publish(self, events: list[Event], sources: list, x: torch.Tensor) -> None:
        learner = self.learner
        started = time.perf_counter()
        probs = learner.predict_proba(x) if learner.net.heads else []
        if self.telemetry is not None:
            self.telemetry.record_prediction("stream", len(events), time.perf_counter() - started)
        labelled = [i for i, e in enumerate(events) if e.label]
        if labelled:
            outcomes = self.prequential.update(learner.tree, [events[i].label for i in labelled],
                                               [p[labelled].argmax(dim=1) for p in probs])
            if self.drift is not None:
                for outcome in self.drift.update(outcomes):
                    self._drift_detected(outcome.level, sources[labelled[outcome.sample]])
        for i, event in enumerate(events):
            document = {"id": event.id, "model_version": learner.steps,
                        "path": prediction_path(learner.tree, [p[i].numpy() for p in probs], self.config.confidence_threshold)}
            if event.label:
                document["label"] = event.label
            self.publisher.prediction(document)

    def _learn(self, events: list[Event], sources: list, x: torch.Tensor) -> None:
        labelled = [i for i, e in enumerate(events) if e.label]
        started = time.perf_counter()
        try:
            self.learner.observe(x[labelled], [events[i].label for i in labelled])
        except LabelPathError:  # e.g. the class cap reached inside this batch: learn one by one
            for i in labelled:
                try:
                    self.learner.observe(x[i:i + 1], [events[i].label])
                except LabelPathError as err:
                    self._dead_letter(sources[i], "bad_label", str(err))
        if self.telemetry is not None and labelled:
            self.telemetry.record_training(len(labelled), time.perf_counter() - started)

    def _drift_detected(self, level: int, record) -> None:
        log.warning("drift detected on level %d's prequential error at %s[%d]@%d", level, record.topic,
                    record.partition, record.offset)
        self.telemetry.record_drift(level)

    def _dead_letter(self, record, reason: str, detail: str) -> None:
        self.dead_letters += 1
        if self.telemetry is not None:
            self.telemetry.record_dead_letter(reason)
        log.warning("dead letter: %s at %s[%d]@%d: %s", reason, record.topic, record.partition, record.offset, detail)
        self.publisher.dead_letter(record.value, reason, detail, record.topic, record.partition, record.offset)

    # -- state ------------------------------------------------------------------------------
    def _checkpoint_and_commit(self, consumer) -> None:
        self.publisher.flush()
        started = time.perf_counter()
        path = self.store.save({
            "format_version": CHECKPOINT_FORMAT,
            "learner": learner_state(self.learner) if self.learner else None,
            "topic": self.config.input_topic,
            "offsets": dict(self.next_offsets),
        })
        seconds = time.perf_counter() - started
        commit_offsets(consumer, self.config.input_topic, self.next_offsets)
        if self.telemetry is not None:
            self.telemetry.record_checkpoint(seconds, path.stat().st_size)
        log.info("checkpoint %s (%.2f s) covers offsets %s; committed", path.name, seconds, self.next_offsets)

    def _restore(self) -> None:
        state = self.store.load_latest()
        if state is None:
            log.info("no checkpoint in %s: starting fresh", self.config.checkpoint_dir)
            return
        if state.get("format_version") != CHECKPOINT_FORMAT or state.get("topic") != self.config.input_topic:
            raise RuntimeError(f"checkpoint in {self.config.checkpoint_dir} is of another format or topic; "
                               "point --checkpoint-dir elsewhere")
        if state["learner"] is not None:
            self.learner = restore_learner(state["learner"], device=self.config.learner.device)
        self.next_offsets = {int(p): int(o) for p, o in state["offsets"].items()}
        log.info("restored checkpoint: offsets %s", self.next_offsets)

    def _report(self) -> None:
        self._last_reported = self.consumed
        rolling = {lv: round(acc, 3) for lv, acc in self.prequential.rolling_accuracy().items()}
        if self.report:
            self.report(self.consumed, self.dead_letters, rolling)
            return
        log.info("consumed %d, dead letters %d, prequential accuracy per level (rolling): %s",
                 self.consumed, self.dead_letters, rolling)


def _lag(consumer, next_offsets: dict[int, int]) -> dict[int, int]:
    """Per assigned partition: the fetch high watermark minus the next offset to read.

    kafka.md: Tansu's ``end_offsets`` is wrong, the high watermark of the last fetch is right;
    a partition not fetched yet has none and is left out.
    """
    lag = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            position = next_offsets.get(tp.partition)
            if position is None:  # fetched but nothing processed yet: the consumer knows where it is
                position = consumer.position(tp)
            lag[tp.partition] = max(0, highwater - position)
    return lag
