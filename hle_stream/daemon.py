"""The streaming daemon: consume, predict, publish, learn, checkpoint, commit.

Offsets are committed only after the checkpoint that covers them is on disk, and a restart
resumes from the offsets stored in the checkpoint, so the model's lineage trains each event
once; predictions between the last checkpoint and a crash are sent again (at-least-once
output, ``id`` is the dedupe key). A checkpoint is written only once every prediction and dead
letter before it is acknowledged by Kafka, so output is never lost either.
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

from kafka.errors import KafkaError

from connectors.kafka_io import DeliveryAborted, Publisher, broker_reachable, commit_offsets, open_consumer
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.checkpoint import CheckpointStore
from hle_stream.config import LearnerConfig, method_config
from hle_stream.device import pick_device
from hle_stream.drift import DriftMonitor
from hle_stream.evaluation import PrequentialAccuracy
from hle_stream.events import Event, EventError, parse_event, prediction_path
from hle_stream.hierarchy import LabelPathError, LabelTree
from hle_stream.learner import HierarchicalLearner
from hle_stream.learner_state import learner_state, restore_learner
from hle_stream.lineage import TrainedIdLog
from hle_stream.telemetry import Telemetry

log = logging.getLogger(__name__)


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
    input_shape: tuple[int, ...] | None = None  # None: the first valid event sets it
    input_dtype: str | None = None  # float32 or uint8; None: the first valid event sets it
    trained_ids_log: Path | None = None  # record of the event ids in the model's lineage (lineage.py)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint directory belongs to another input topic."""


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
        # checks the first events' labels against the configured depth before a learner exists
        self._no_classes_yet = LabelTree(config.learner.max_depth, config.learner.max_classes)
        self.lineage = TrainedIdLog(config.trained_ids_log) if config.trained_ids_log else None
        self.kafka_ok = False  # the publisher delivers and the consumer holds its partitions (/readyz)
        self._probed_at, self._reachable = float("-inf"), False

    def _waiting_for_kafka(self) -> None:
        """Called while the loop waits for the broker (output or a failed poll): alive, but not ready."""
        self.last_tick = time.monotonic()
        self.kafka_ok = False

    def _broker_reachable(self) -> bool:
        """An idle loop's readiness view of the broker, probed at most once a second."""
        now = time.monotonic()
        if now - self._probed_at >= 1.0:
            self._probed_at, self._reachable = now, broker_reachable(self.settings)
        return self._reachable

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
                if self.publisher.delivery_failed():  # the broker went away: wait for it, not-ready
                    self.kafka_ok = False
                    self.publisher.deliver_all(lambda: self._stop, self._waiting_for_kafka)
                limit = cfg.max_batch if cfg.max_events is None else min(cfg.max_batch, cfg.max_events - self.consumed)
                try:
                    batches = consumer.poll(timeout_ms=500, max_records=limit)
                except KafkaError as err:  # kafka-python can raise from poll while the broker is away
                    log.warning("poll failed (%s); retrying", err)
                    self._waiting_for_kafka()
                    time.sleep(0.5)
                    continue
                records = [r for part in batches.values() for r in part]
                self.last_tick = time.monotonic()
                if records and self.first_record_at is None:
                    self.first_record_at = self.last_tick
                with self.lock:
                    self._process(records)
                self.kafka_ok = self.publisher.healthy and bool(consumer.assignment()) and (
                    bool(records) or self._broker_reachable())
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
            self._checkpoint_and_commit(consumer)  # a clean stop: SIGTERM or --max-events
        except DeliveryAborted as err:
            log.warning("stopping without a final checkpoint (%s): the last checkpoint stands, and the events "
                        "after it will be consumed, predicted and learned again on restart", err)
        finally:
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
                event = parse_event(record.value, self.learner.input_shape if self.learner else self.config.input_shape,
                                    self.learner.tree if self.learner else self._no_classes_yet,
                                    self.config.max_message_bytes)
                if events and event.x.shape != events[0].x.shape:
                    raise EventError("wrong_shape", f"shape {event.x.shape} differs from {events[0].x.shape} in the batch")
                expected = self._expected_dtype(events)
                if expected is not None and _dtype(event) != expected:
                    raise EventError("wrong_type", f"features of dtype {_dtype(event)}; the model takes {expected}")
            except EventError as err:
                self._dead_letter(record, err.reason, str(err))
                continue
            events.append(event)
            sources.append(record)
        events, sources = self._within_class_cap(events, sources)
        if not events:
            return
        if self.learner is None:
            shape, dtype = events[0].x.shape, _dtype(events[0])
            self.learner = HierarchicalLearner(method_config(self.config.method, self.config.learner), shape, dtype)
            log.info("learner created for inputs of shape %s (%s), method %s", shape, dtype, self.config.method)
        x = torch.from_numpy(np.stack([e.x for e in events]))
        self._predict_and_publish(events, sources, x)
        self._learn(events, sources, x)

    def _within_class_cap(self, events: list[Event], sources: list) -> tuple[list[Event], list]:
        """Dead-letter, before predicting, the labelled events whose new classes would pass the cap
        once the earlier events of the batch are learned (each alone passed ``parse_event``)."""
        tree = self.learner.tree if self.learner else self._no_classes_yet
        labelled = [i for i, e in enumerate(events) if e.label]
        rejected = {labelled[j] for j in tree.over_cap([events[i].label for i in labelled])}
        for i in sorted(rejected):
            self._dead_letter(sources[i], "bad_label", f"{events[i].label}: would exceed the cap of "
                                                        f"{tree.max_classes} classes")
        keep = [i for i in range(len(events)) if i not in rejected]
        return [events[i] for i in keep], [sources[i] for i in keep]

    def _expected_dtype(self, events: list[Event]) -> torch.dtype | None:
        if self.learner is not None:
            return self.learner.memory.x.dtype
        if self.config.input_dtype is not None:
            return getattr(torch, self.config.input_dtype)
        return _dtype(events[0]) if events else None

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
        learned = labelled
        try:  # observe() rejects a whole batch before learning any of it
            self.learner.observe(x[labelled], [events[i].label for i in labelled])
        except LabelPathError:  # e.g. the class cap reached inside this batch: learn one by one
            learned = []
            for i in labelled:
                try:
                    self.learner.observe(x[i:i + 1], [events[i].label])
                    learned.append(i)
                except LabelPathError as err:
                    self._dead_letter(sources[i], "bad_label", str(err))
        if self.lineage is not None:
            self.lineage.record(events[i].id for i in learned)
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
        """Every output acknowledged → trained ids appended → checkpoint on disk → offsets committed.
        A crash between any two steps leaves the previous checkpoint in charge."""
        self.publisher.deliver_all(lambda: self._stop, self._waiting_for_kafka)
        started = time.perf_counter()
        path = self.store.save({
            "learner": learner_state(self.learner) if self.learner else None,
            "prequential": self.prequential.state_dict(),
            "topic": self.config.input_topic,
            "offsets": dict(self.next_offsets),
            "trained_ids": self.lineage.commit() if self.lineage is not None else None,
        })
        seconds = time.perf_counter() - started
        if self.telemetry is not None:
            self.telemetry.record_checkpoint(seconds, path.stat().st_size)
        try:
            commit_offsets(consumer, self.config.input_topic, self.next_offsets)
        except KafkaError as err:  # the checkpoint's offsets rule on restart; the next commit catches up
            log.warning("offset commit failed after checkpoint %s: %s", path.name, err)
            return
        log.info("checkpoint %s (%.2f s) covers offsets %s; committed", path.name, seconds, self.next_offsets)

    def _restore(self) -> None:
        state, report = self.store.load_latest()
        if self.telemetry is not None and report.corrupt:
            self.telemetry.record_corrupt_checkpoints(len(report.corrupt))
        if report.corrupt:
            log.error("recovered from %d unusable checkpoint(s) %s: resuming from %s", len(report.corrupt),
                      [p.name for p in report.corrupt], report.path.name if report.path else "nothing (fresh start)")
        if state is None:
            log.info("no checkpoint in %s: starting fresh", self.config.checkpoint_dir)
            if self.lineage is not None:
                self.lineage.truncate_to(0)
            return
        if state.get("topic") != self.config.input_topic:
            raise CheckpointMismatchError(f"the checkpoint in {self.config.checkpoint_dir} is for topic "
                                          f"{state.get('topic')!r}, not {self.config.input_topic!r}; "
                                          "point --checkpoint-dir elsewhere")
        if state["learner"] is not None:
            self.learner = restore_learner(state["learner"], device=self.config.learner.device)
        self.prequential = PrequentialAccuracy.from_state_dict(state["prequential"])
        self.next_offsets = {int(p): int(o) for p, o in state["offsets"].items()}
        if self.lineage is not None and state["trained_ids"] is not None:
            dropped = self.lineage.truncate_to(state["trained_ids"])
            log.info("trained-ids log: %d ids after the checkpoint dropped (they will be learned again)", dropped)
        log.info("restored checkpoint %s: offsets %s", report.path.name, self.next_offsets)

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


def _dtype(event: Event) -> torch.dtype:
    return torch.from_numpy(event.x[:0]).dtype
