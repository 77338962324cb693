"""The streaming daemon: consume, predict, publish, learn, checkpoint, commit.

Offsets are committed only after the checkpoint that covers them is on disk, and a restart
resumes from the offsets stored in the checkpoint, so the model's lineage trains each event
once; predictions between the last checkpoint and a crash are sent again (at-least-once
output, ``id`` is the dedupe key). A checkpoint is written only once every prediction and dead
letter before it is acknowledged by Kafka, so output is never lost either.

What happens between a poll and a checkpoint is ``hle_stream.processing`` (no I/O); this module
is the loop around it: Kafka, checkpoints, readiness and the serving snapshot.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kafka.errors import KafkaError

from connectors.kafka_io import DeliveryAborted, Publisher, broker_reachable, commit_offsets, open_consumer
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.checkpoint import CheckpointStore
from hle_stream.device import pick_device
from hle_stream.drift import DriftMonitor
from hle_stream.lineage import TrainedIdLog
from hle_stream.processing import MicroBatchProcessor, ProcessingConfig
from hle_stream.serving import HttpLimits
from hle_stream.snapshot import ServingSnapshot
from hle_stream.telemetry import Telemetry

log = logging.getLogger(__name__)

EXIT_REFUSED = 2  # refused to start: configuration, checkpoint directory or checkpoint unusable
EXIT_NO_FINAL_CHECKPOINT = 3  # stopped, but the final checkpoint could not be written
CHECKPOINT_RETRY_S = 5.0  # after a failed checkpoint write (disk full, no descriptors)
STATE_KEYS = ("learner", "prequential", "topic", "offsets")


@dataclass(frozen=True)
class DaemonConfig:
    input_topic: str = "hle-events"
    predictions_topic: str = "hle-predictions"
    dead_letter_topic: str = "hle-dead-letters"
    group_id: str = "hle-stream"
    input_partitions: int = 1  # when the daemon creates its input topic
    checkpoint_dir: Path = Path("checkpoints")
    checkpoint_every_events: int = 5000
    checkpoint_every_seconds: float = 60.0
    max_batch: int = 64
    max_events: int | None = None  # stop after consuming this many (demos, tests)
    report_every_events: int = 1000
    http_host: str = "127.0.0.1"
    http_port: int | None = 8080  # None: no HTTP server
    http: HttpLimits = field(default_factory=HttpLimits)
    serving_refresh_seconds: float = 1.0  # the HTTP snapshot is at most this much older than the model
    metrics: bool = True  # Prometheus series on /metrics and ADWIN drift detection
    max_output_bytes: int = 1_000_000  # every record the daemon writes fits Kafka's default limit
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    trained_ids_log: Path | None = None  # record of the event ids in the model's lineage (lineage.py)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint directory belongs to another input topic, or holds a foreign structure."""


class FinalCheckpointFailed(RuntimeError):
    """The daemon stopped, but its last checkpoint could not be written."""


ProgressReport = Callable[[int, int, dict[int, float]], None]  # consumed, dead letters, rolling accuracy


class Daemon:
    def __init__(self, settings: KafkaSettings, config: DaemonConfig, report: ProgressReport | None = None) -> None:
        self.settings = settings
        self.config = config
        self.report = report
        processing = config.processing
        self.telemetry = (Telemetry(processing.learner.max_depth, processing.method,
                                    pick_device(processing.learner.device).type) if config.metrics else None)
        self.store = CheckpointStore(config.checkpoint_dir)  # takes the directory's lock
        lineage = TrainedIdLog(config.trained_ids_log) if config.trained_ids_log else None
        self.processor = MicroBatchProcessor(processing, sink=None, telemetry=self.telemetry,  # type: ignore[arg-type]
                                             drift=DriftMonitor() if config.metrics else None, lineage=lineage)
        self._stop = False
        self._last_reported = -1
        self.lock = threading.Lock()  # held while a micro-batch is processed (/classes reads under it)
        self.last_tick = time.monotonic()
        self.first_record_at: float | None = None  # monotonic time of the first record (throughput)
        self.snapshot: ServingSnapshot | None = None
        self._snapshot_at = float("-inf")
        self.model_finite = True
        self.checkpoint_ok = True
        self.confidence_threshold = processing.confidence_threshold
        self.max_abs_feature = processing.max_abs_feature
        self._loop_kafka_ok = False  # the loop's view: the publisher delivers, the consumer holds partitions
        self._broker_probe = BrokerProbe(settings)
        self._assigned: set[int] = set()  # input partitions held after the last rebalance

    # what HTTP serving reads
    learner = property(lambda self: self.processor.learner)
    prequential = property(lambda self: self.processor.prequential)

    def request_stop(self) -> None:
        """Finish the batch in hand, checkpoint, commit, close (SIGTERM)."""
        self._stop = True

    @property
    def kafka_ok(self) -> bool:
        """Readiness's Kafka check: the loop's view and a probe of its own, which sees a broker go
        away within a second even while the loop is blocked in a Kafka call (a commit waits up to
        10 s) or still consumes buffered records."""
        return self._loop_kafka_ok and self._broker_probe.reachable

    def _waiting_for_kafka(self) -> None:
        """Called while the loop waits for the broker (output or a failed poll): alive, but not ready."""
        self.last_tick = time.monotonic()
        self._loop_kafka_ok = False

    def run(self) -> None:
        """The loop. Raises ``FinalCheckpointFailed`` if it stopped without its last checkpoint."""
        server = None
        try:
            self._restore()
            server = self._serve_http()
            self._broker_probe.start()
            self._run(serving=server is not None)
        finally:
            self._broker_probe.stop()
            if server is not None:
                server.stop()
            self.store.close()

    def _serve_http(self):
        """The HTTP server, started before Kafka so that probes answer (not ready) while the broker
        is awaited; a port it cannot bind stops the daemon at once (``HttpStartError``)."""
        cfg = self.config
        if cfg.http_port is None:
            return None
        from hle_stream.serving import HttpServer

        if self.processor.learner is not None:  # a restored model serves at once
            self.snapshot = ServingSnapshot(self.processor.learner)
        server = HttpServer(self, cfg.http_host, cfg.http_port, cfg.http)
        server.start()
        return server

    def _run(self, serving: bool) -> None:
        cfg = self.config
        _raise_descriptor_limit()
        ensure_topics(self.settings, {cfg.input_topic: cfg.input_partitions, cfg.predictions_topic: 1,
                                      cfg.dead_letter_topic: 1})
        consumer = open_consumer(self.settings, cfg.group_id, cfg.input_topic, lambda: dict(self.processor.next_offsets))
        self.publisher = Publisher(self.settings, cfg.predictions_topic, cfg.dead_letter_topic, cfg.max_output_bytes,
                                   on_dropped=self._output_dropped)
        self.processor.sink = self.publisher
        since_checkpoint, next_checkpoint_at = 0, time.monotonic() + cfg.checkpoint_every_seconds
        next_report = cfg.report_every_events
        final_ok = True
        try:
            while not self._stop and (cfg.max_events is None or self.processor.consumed < cfg.max_events):
                if self.publisher.delivery_failed():  # the broker went away: wait for it, not-ready
                    self._loop_kafka_ok = False
                    self.publisher.deliver_all(lambda: self._stop, self._waiting_for_kafka)
                records = self._poll(consumer)
                if records is None:
                    continue
                with self.lock:
                    self.processor.process(records)
                self._after_batch(consumer, records, serving)
                since_checkpoint += len(records)
                if since_checkpoint and (since_checkpoint >= cfg.checkpoint_every_events
                                         or time.monotonic() >= next_checkpoint_at):
                    if self._checkpoint_and_commit(consumer):
                        since_checkpoint, next_checkpoint_at = 0, time.monotonic() + cfg.checkpoint_every_seconds
                    else:
                        next_checkpoint_at = time.monotonic() + CHECKPOINT_RETRY_S
                if self.processor.consumed >= next_report:
                    self._report()
                    next_report += cfg.report_every_events
            final_ok = self._checkpoint_and_commit(consumer)  # a clean stop: SIGTERM or --max-events
        except DeliveryAborted as err:
            log.warning("stopping without a final checkpoint (%s): the last checkpoint stands, and the events "
                        "after it will be consumed, predicted and learned again on restart", err)
        finally:
            if self.processor.consumed != self._last_reported:
                self._report()
            consumer.close()
            self.publisher.close()
        if not final_ok:
            raise FinalCheckpointFailed("the final checkpoint could not be written; the last one on disk stands, "
                                        "and the events after it will be learned again on restart")

    def _poll(self, consumer) -> list | None:
        cfg = self.config
        limit = cfg.max_batch if cfg.max_events is None else min(cfg.max_batch, cfg.max_events - self.processor.consumed)
        try:
            batches = consumer.poll(timeout_ms=500, max_records=limit)
        except KafkaError as err:  # kafka-python can raise from poll while the broker is away
            log.warning("poll failed (%s); retrying", err)
            self._waiting_for_kafka()
            time.sleep(0.5)
            return None
        self.last_tick = time.monotonic()
        records = [r for part in batches.values() for r in part]
        if records and self.first_record_at is None:
            self.first_record_at = self.last_tick
        return records

    def _after_batch(self, consumer, records: list, serving: bool) -> None:
        """Readiness, metrics and the serving snapshot, once per micro-batch."""
        self._loop_kafka_ok = self.publisher.healthy and bool(consumer.assignment())
        self._track_assignment(consumer)
        learner = self.processor.learner
        if serving and learner is not None and time.monotonic() - self._snapshot_at >= self.config.serving_refresh_seconds:
            if self.snapshot is None or self.snapshot.version != learner.steps or \
                    self.snapshot.tree.total_classes != learner.tree.total_classes:
                self.snapshot = ServingSnapshot(learner, self.snapshot)
                self.model_finite = self.snapshot.finite
            self._snapshot_at = time.monotonic()
        if self.telemetry is not None:
            self.telemetry.record_consumed(len(records))
            self.telemetry.record_lag(_lag(consumer, self.processor.next_offsets))
            self.telemetry.refresh(learner, self.processor.prequential)

    def _track_assignment(self, consumer) -> None:
        """After a rebalance: no lag series for partitions gone, and a loud word when this daemon
        holds only part of the topic (another member of the group trains a separate model on the
        rest; one trainer per group is the scale-out issue's rule)."""
        assigned = {tp.partition for tp in consumer.assignment()}
        if assigned == self._assigned:
            return
        gone, self._assigned = self._assigned - assigned, assigned
        total = consumer.partitions_for_topic(self.config.input_topic) or set()
        if self.telemetry is not None:
            self.telemetry.forget_partitions(gone)
            self.telemetry.record_assignment(len(assigned), len(total))
        if assigned and len(assigned) < len(total):
            log.error("this daemon holds only partitions %s of the %d of %s: another member of group %r reads the "
                      "rest and trains a separate model on it; run one daemon per group", sorted(assigned),
                      len(total), self.config.input_topic, self.config.group_id)

    def _output_dropped(self, topic: str, size: int, reason: str) -> None:
        if self.telemetry is not None:
            self.telemetry.record_output_dropped()

    # -- state ------------------------------------------------------------------------------
    def _checkpoint_and_commit(self, consumer) -> bool:
        """Every output acknowledged → trained ids appended → checkpoint on disk → offsets committed.
        A crash between any two steps leaves the previous checkpoint in charge. False (and nothing
        committed) when the checkpoint could not be written: the caller retries later."""
        self.publisher.deliver_all(lambda: self._stop, self._waiting_for_kafka)
        learner = self.processor.learner
        if learner is not None and not learner.net.finite():
            self.model_finite = False
            log.error("the model's weights are not finite: checkpoint refused (the last good one stands); "
                      "restart the daemon to resume from it")
            return False
        started = time.perf_counter()
        try:
            state = self.processor.state_dict()
            state["topic"] = self.config.input_topic
            state["trained_ids"] = self.processor.lineage.commit() if self.processor.lineage is not None else None
            path = self.store.save(state)
        except OSError as err:
            self.checkpoint_ok = False
            log.error("checkpoint write failed in %s: %s; nothing committed, retrying in %.0f s (not ready meanwhile)",
                      self.config.checkpoint_dir, err.strerror or err, CHECKPOINT_RETRY_S)
            if self.telemetry is not None:
                self.telemetry.record_checkpoint_failure()
            return False
        self.checkpoint_ok = True
        seconds = time.perf_counter() - started
        if self.telemetry is not None:
            self.telemetry.record_checkpoint(seconds, path.stat().st_size)
        owned = {tp.partition for tp in consumer.assignment()}  # a revoked partition's offset is not ours to move
        try:
            commit_offsets(consumer, self.config.input_topic,
                           {p: o for p, o in self.processor.next_offsets.items() if p in owned})
        except KafkaError as err:  # the checkpoint's offsets rule on restart; the next commit catches up
            log.warning("offset commit failed after checkpoint %s: %s", path.name, err)
            return True
        log.info("checkpoint %s (%.2f s) covers offsets %s; committed", path.name, seconds, self.processor.next_offsets)
        return True

    def _restore(self) -> None:
        state, report = self.store.load_latest()
        if self.telemetry is not None and report.corrupt:
            self.telemetry.record_corrupt_checkpoints(len(report.corrupt))
        if report.corrupt:
            log.error("recovered from %d unusable checkpoint(s) %s: resuming from %s", len(report.corrupt),
                      [p.name for p in report.corrupt], report.path.name if report.path else "nothing (fresh start)")
        lineage = self.processor.lineage
        if state is None:
            log.info("no checkpoint in %s: starting fresh", self.config.checkpoint_dir)
            if lineage is not None:
                lineage.truncate_to(0)
            return
        _check_structure(state, report.path)
        if state["topic"] != self.config.input_topic:
            raise CheckpointMismatchError(f"the checkpoint in {self.config.checkpoint_dir} is for topic "
                                          f"{state['topic']!r}, not {self.config.input_topic!r}; "
                                          "point --checkpoint-dir elsewhere")
        try:
            self.processor.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointMismatchError(f"{report.path} passes its checksum but its content does not load "
                                          f"({type(err).__name__}: {err}); move it away to start from the one "
                                          "before, or use an empty --checkpoint-dir") from None
        if lineage is not None and state.get("trained_ids") is not None:
            dropped = lineage.truncate_to(state["trained_ids"])
            log.info("trained-ids log: %d ids after the checkpoint dropped (they will be learned again)", dropped)
        log.info("restored checkpoint %s: offsets %s", report.path.name, self.processor.next_offsets)

    def _report(self) -> None:
        self._last_reported = self.processor.consumed
        rolling = {lv: round(acc, 3) for lv, acc in self.processor.prequential.rolling_accuracy().items()}
        if self.report:
            self.report(self.processor.consumed, self.processor.dead_letters, rolling)
            return
        log.info("consumed %d, dead letters %d, prequential accuracy per level (rolling): %s",
                 self.processor.consumed, self.processor.dead_letters, rolling)


class BrokerProbe:
    """A TCP connection to a bootstrap server, tried once a second in a thread of its own."""

    def __init__(self, settings: KafkaSettings, period_s: float = 1.0) -> None:
        self.settings, self.period_s = settings, period_s
        self.reachable = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="broker-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()

    def _probe(self) -> None:
        while True:
            self.reachable = broker_reachable(self.settings)
            if self._closing.wait(self.period_s):
                return


def _check_structure(state: Any, path: Path | None) -> None:
    """A checkpoint that passes its checksum but is not a daemon checkpoint (written by another
    tool into this directory) is refused by name, not half-loaded."""
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS) or \
            not isinstance(state["offsets"], dict):
        raise CheckpointMismatchError(f"{path} is not an hle-stream daemon checkpoint (expected the keys "
                                      f"{', '.join(STATE_KEYS)}); move it away or use an empty --checkpoint-dir")


def _raise_descriptor_limit() -> None:
    """Lift the soft limit on open files to the hard one: HTTP connections must not starve the
    checkpoint writer (the server also caps its connections, ``HttpLimits.max_connections``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-files limit from %d: %s", soft, err)


def _lag(consumer, next_offsets: dict[int, int]) -> dict[int, int]:
    """Per assigned partition: the fetch high watermark minus the next offset to read.

    Tansu's ``end_offsets`` is wrong, the high watermark of the last fetch is right; a partition
    not fetched yet has none and is left out.
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
