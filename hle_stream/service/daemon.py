"""The streaming daemon: consume, predict, publish, learn, checkpoint, commit.

What happens between a poll and a checkpoint is ``hle_stream.service.processing`` (no I/O); the
checkpoint protocol is ``hle_stream.service.checkpointer``; where a partition resumes after a
rebalance is ``hle_stream.service.offsets``. This module is the loop around them, written against
``connectors.ports`` (a Source and a DeliveringSink): readiness, telemetry and the serving
snapshot. ``hle_stream.service.kafka_daemon`` wires it to Kafka.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from dataclasses import dataclass
from typing import Callable

from connectors.blob_store import DirectoryBlobStore, open_blob_store
from connectors.ports import EARLIEST, LATEST, DeliveringSink, Record, ResumeRule, Source
from hle_stream.contract import Event
from hle_stream.core.device import pick_device
from hle_stream.core.predictor import Predictor
from hle_stream.service.checkpoint import CheckpointStore
from hle_stream.service.checkpointer import Checkpointer, CheckpointMismatchError
from hle_stream.service.config import ROLES, DaemonConfig
from hle_stream.service.drift import DriftMonitor
from hle_stream.service.lineage import TrainedIdLog
from hle_stream.service.live_view import LiveView
from hle_stream.service.model_history import rollback_marker
from hle_stream.service.offsets import resume_offsets
from hle_stream.service.processing import MicroBatchProcessor
from hle_stream.service.snapshots import newest_snapshot_marker, publish_snapshot
from hle_stream.service.store_owner import bind_store
from hle_stream.service.stream_loop import StreamLoop
from hle_stream.service.telemetry import NO_TELEMETRY, Telemetry
from hle_stream.service.train_budget import TrainBudget
from hle_stream.service.trainer_lease import TrainerLease

log = logging.getLogger(__name__)

EXIT_REFUSED = 2  # refused to start: configuration, checkpoint directory or checkpoint unusable
EXIT_NO_FINAL_CHECKPOINT = 3  # stopped, but the final checkpoint could not be written
CHECKPOINT_RETRY_S = 5.0  # after a failed checkpoint write (disk full, no descriptors)
ROLLBACK_POLL_S = 2.0  # how often a trainer with a model store looks for a rollback


class FinalCheckpointFailed(RuntimeError):
    """The daemon stopped, but its last checkpoint could not be written."""


@dataclass(frozen=True)
class Progress:
    """The daemon's work so far, for progress lines and pictures."""

    consumed: int
    trained: int  # labelled events in the model's lineage (a restored model's included)
    dead_letters: int
    events_per_second: float  # consumed since the first record, over the seconds since
    lag: int | None  # records not read yet in the held partitions (None: not known yet)
    accuracy: dict[int, float]  # rolling prequential accuracy per level
    classes: tuple[int, ...]  # known classes per level
    encoder: tuple[float, float] | None = None  # text encoder: seconds per micro-batch, texts/s (None: no text yet)

    def line(self) -> str:
        levels = "  ".join(f"L{lv} {acc:.3f}" for lv, acc in self.accuracy.items()) or "-"
        lag = "?" if self.lag is None else str(self.lag)
        encoder = "" if self.encoder is None else \
            f" | text encoder {1000 * self.encoder[0]:.0f} ms/batch ({self.encoder[1]:.0f} texts/s)"
        return (f"{self.consumed} events ({self.events_per_second:.0f}/s), {self.trained} learned, "
                f"{self.dead_letters} dead letters, lag {lag}{encoder} | classes per level {list(self.classes)} | "
                f"prequential accuracy {levels}")


ProgressReport = Callable[[Progress], None]
Connect = Callable[[ResumeRule, Callable[[str, int, str], None]], tuple[Source, DeliveringSink]]
"""Opens the source (with the daemon's resume rule) and the sink (with a callback for records
dropped as too large), once HTTP answers: it may wait for a broker."""


class Daemon:
    """The loop: poll → process → readiness, telemetry, snapshot → checkpoint and commit when due.

    ``connect`` opens the source and the sink inside ``run`` (after HTTP serves, so probes answer
    while a broker is awaited); ``reachable`` is readiness's own view of the source (a broker
    probe), ``None`` when there is nothing to probe.
    """

    def __init__(self, config: DaemonConfig, connect: Connect, report: ProgressReport | None = None,
                 reachable: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.connect = connect
        self.report = report
        self.reachable = reachable or (lambda: True)
        processing = config.processing
        self.telemetry = (Telemetry(processing.learner_config.max_depth, processing.method,
                                    pick_device(processing.learner_config.device).type) if config.metrics else NO_TELEMETRY)
        lineage = TrainedIdLog(config.trained_ids_log) if config.trained_ids_log else None
        self.processor = MicroBatchProcessor(processing, telemetry=self.telemetry,
                                             drift=DriftMonitor() if config.metrics else None, lineage=lineage)
        if config.role not in ROLES:
            raise ValueError(f"role {config.role!r} is not one of {', '.join(ROLES)}")
        self.blobs = open_blob_store(config.model_store) if config.model_store else \
            DirectoryBlobStore(config.checkpoint_dir)
        trainer = config.role == "trainer"
        self.lease = TrainerLease(self.blobs, config.group_id) if trainer else None
        self.checkpointer = Checkpointer(CheckpointStore(self.blobs, exclusive=not trainer), self.processor,
                                         config.input_topic, self.telemetry, self.lease)
        self._snapshot_published_at = float("-inf")
        self._snapshot_published_version: int | None = None
        self._source: Source | None = None
        self._unsaved = 0  # events consumed since the last checkpoint
        self.budget = TrainBudget(config.train_budget)
        self.loop = StreamLoop(config.max_batch, config.max_events)
        self._last_reported = -1
        self._serving = False
        self._next_checkpoint_at = self._next_report_at = 0.0
        self.lock = threading.Lock()  # held while a micro-batch is processed (/classes reads under it)
        self.first_record_at: float | None = None  # monotonic time of the first record (throughput)
        self.snapshot: Predictor | None = None  # what HTTP predicts with (``Predictor``)
        self._snapshot_at = float("-inf")
        self._snapshot_finite = True
        self.max_abs_feature = processing.max_abs_feature
        self._assigned: set[int] = set()  # input partitions held after the last rebalance
        self._refused: CheckpointMismatchError | None = None  # a takeover found a store it cannot continue
        self._read_from: int | None = None  # EARLIEST or LATEST: where the next assignment starts, once
        self._rollback_seen: dict | None = None  # the store's rollback record when this model was restored
        self._rollback_checked_at = float("-inf")
        self.live = LiveView()  # what the page at / shows

    # what HTTP serving reads
    learner = property(lambda self: self.processor.learner)
    prequential = property(lambda self: self.processor.prequential)
    confidence_threshold = property(lambda self: self.processor.confidence_threshold)
    checkpoint_ok = property(lambda self: self.checkpointer.healthy)
    writer_ok = property(lambda self: not self.checkpointer.fenced)
    model_version = property(lambda self: self.processor.model_version)
    last_tick = property(lambda self: self.loop.last_tick)
    consumed = property(lambda self: self.processor.consumed)

    def with_text_features(self, events: list[Event]) -> list[Event]:
        return self.processor.texts.for_model(events, self.processor.encoder_identity is not None)

    @property
    def model_finite(self) -> bool:
        return self._snapshot_finite and self.checkpointer.model_finite

    def request_stop(self) -> None:
        """Finish the batch in hand, checkpoint, commit, close (SIGTERM)."""
        self.loop.request_stop()

    @property
    def kafka_ok(self) -> bool:
        """Readiness's source check: the loop's view and the probe's, which sees a broker go away
        within a second even while the loop is blocked in a call (a commit waits up to 10 s) or
        still works through buffered records."""
        return self.loop.io_ok and self.reachable()

    def resume(self, committed: dict[int, int | None]) -> dict[int, int]:
        """The source's resume rule (``hle_stream.service.offsets``), applied to the processor's
        offsets too, so that a partition resumed at the group's later offset is committed from there.
        A trainer with standbys takes over here first: claim the store, load its newest checkpoint."""
        if self.lease is not None:
            self._take_over()
        if self._read_from is not None:  # offsets not to be trusted, or no model left: --reset-offsets
            start, self._read_from = dict.fromkeys(committed, self._read_from), None
            for partition in start:
                log.info("partition %d resumes at its %s offset (--reset-offsets)", partition,
                         self.config.reset_offsets)
            return start
        start = resume_offsets(self.processor.next_offsets, committed, self.checkpointer.own_commits)
        if self.checkpointer.uncovered_from_earliest:  # a rolled-back model never read these
            start.update({p: EARLIEST for p in committed if p not in self.processor.next_offsets})
        self.processor.next_offsets.update({p: o for p, o in start.items() if o >= 0})
        for partition, offset in start.items():
            log.info("partition %d resumes at %s", partition, f"offset {offset}" if offset >= 0 else "its first event")
        return start

    def _take_over(self) -> None:
        """The group gave this trainer the partitions (in the consumer's rebalance callback, while
        the loop waits in ``poll``): claim the store with the group's generation and continue the
        newest checkpoint there, whoever wrote it (no checkpoint: a new model)."""
        generation = self._source.generation() if self._source is not None else None
        started = time.monotonic()
        # the store still names this trainer's previous generation: nobody wrote since, keep the model in hand
        continuing = self.lease.generation is not None and self.lease.holds(self.lease.generation)
        if generation is None or not self.lease.claim(generation):
            return  # fenced: it may not write, and the group will make it a standby
        if continuing:
            return
        self.processor.reset()
        try:
            self._restore()
        except CheckpointMismatchError as err:  # in the rebalance callback: stop the loop, never run on
            self._refuse("cannot take over", err)
            return
        self.checkpointer.fenced = False
        marker = self._after_restore()
        learner = self.processor.learner
        self.snapshot = self._predictor() if learner is not None and self.config.http_port is not None else None
        # the group reassigns a session timeout after a failure; the predecessor's last snapshot
        # bounds when it was last seen alive (within --snapshot-every-seconds)
        since = f", {time.time() - float(marker['published_at']):.1f} s after the previous trainer's last snapshot" \
            if marker is not None and "published_at" in marker else ""
        log.info("took over as the active trainer (generation %d) in %.2f s%s: %d events in the model's lineage",
                 generation, time.monotonic() - started, since, learner.seen if learner else 0)

    def run(self) -> None:
        """The loop. Raises ``FinalCheckpointFailed`` if it stopped without its last checkpoint."""
        server = None
        lineage = self.processor.lineage
        try:
            bind_store(self.blobs, self.config.group_id, lineage.log_id if lineage else None,
                       self.config.take_over_store)
            if self.lease is None:  # a trainer with standbys restores when it takes over
                self.checkpointer.restore(fresh_start_allowed=self.config.reset_offsets is not None)
                self._after_restore()
            server = self._serve_http()
            self._run(serving=server is not None)
            if self._refused is not None:
                raise self._refused
        finally:
            if server is not None:
                server.stop()
            self.checkpointer.close()

    def _serve_http(self):
        """The HTTP server, started before the source so that probes answer (not ready) while the
        broker is awaited; a port it cannot bind stops the daemon at once (``HttpStartError``)."""
        cfg = self.config
        if cfg.http_port is None:
            return None
        from hle_stream.service.serving import HttpServer

        if self.processor.learner is not None:  # a restored model serves at once
            self.snapshot = self._predictor()
        server = HttpServer(self, cfg.http_host, cfg.http_port, cfg.http)
        server.start()
        return server

    def _run(self, serving: bool) -> None:
        cfg = self.config
        _raise_descriptor_limit()
        source, sink = self.connect(self.resume, self._output_dropped)
        self._source, self._serving = source, serving
        if self.lease is None:  # a trainer checks when it takes over
            self._check_offsets_valid()
        self._unsaved, self._next_checkpoint_at = 0, time.monotonic() + cfg.checkpoint_every_seconds
        self._next_report_at = time.monotonic() + min(cfg.report_every_seconds, 2.0)  # the first soon after the start
        if not self.loop.run(self, source, sink):
            raise FinalCheckpointFailed("the final checkpoint could not be written; the last one on disk stands, "
                                        "and the events after it will be learned again on restart")

    # -- the loop's role (hle_stream.service.stream_loop) --------------------------------------
    def before_poll(self, source: Source) -> None:
        pass

    def process(self, source: Source, sink: DeliveringSink, records: list[Record]) -> None:
        """The micro-batch, then readiness, metrics and snapshots; a checkpoint (then a commit) every
        ``checkpoint_every_events`` or ``checkpoint_every_seconds``, retried after a failed write."""
        cfg = self.config
        if records and self.first_record_at is None:
            self.first_record_at = self.loop.last_tick
        self._process(source, sink, records)
        self._after_batch(source, records, self._serving)
        self._unsaved += len(records)
        if self._unsaved and (self._unsaved >= cfg.checkpoint_every_events
                                 or time.monotonic() >= self._next_checkpoint_at):
            if self._checkpoint_and_commit(source, sink):
                self._unsaved, self._next_checkpoint_at = 0, time.monotonic() + cfg.checkpoint_every_seconds
            else:
                self._next_checkpoint_at = time.monotonic() + CHECKPOINT_RETRY_S
        if time.monotonic() >= self._next_report_at:
            self._report(source)
            self._next_report_at = time.monotonic() + cfg.report_every_seconds

    def finish(self, source: Source, sink: DeliveringSink) -> bool:
        """A clean stop (SIGTERM, ``max_events``): the final checkpoint and commit (a standby, or a
        daemon that found a store it cannot continue, has none)."""
        return self._standby() or self._refused is not None or self._checkpoint_and_commit(source, sink)

    def aborted(self, err: Exception) -> None:
        log.warning("stopping without a final checkpoint (%s): the last checkpoint stands, and the events "
                    "after it will be consumed, predicted and learned again on restart", err)

    def closing(self, source: Source) -> None:
        if self.processor.consumed != self._last_reported:
            self._report(source)

    def _process(self, source: Source, sink: DeliveringSink, records: list[Record]) -> None:
        """One micro-batch, trained on or only predicted and remembered as the budget says."""
        learner = self.processor.learner
        steps_before = learner.steps if learner is not None else 0
        lag = source.lag(self.processor.next_offsets) if records else None
        train = self.budget.should_train(sum(lag.values()) if lag else None)
        started = time.perf_counter()
        with self.lock:
            self.processor.process(records, self.live.watching(sink), train=train)
        learner = self.processor.learner
        steps = learner.steps if learner is not None else 0
        self.budget.record(len(records), time.perf_counter() - started, steps - steps_before)
        self.telemetry.record_budget(self.budget.in_force, steps)

    def _after_batch(self, source: Source, records: list[Record], serving: bool) -> None:
        """The partitions held, metrics and the serving snapshot, once per micro-batch."""
        self._track_assignment(source)
        learner = self.processor.learner
        if serving and learner is not None and time.monotonic() - self._snapshot_at >= self.config.serving_refresh_seconds:
            if self.snapshot is None or self.snapshot.version != self.processor.model_version or \
                    self.snapshot.tree.total_classes != learner.tree.total_classes:
                self.snapshot = self._predictor(self.snapshot)
                self._snapshot_finite = self.snapshot.finite
            self._snapshot_at = time.monotonic()
        if time.monotonic() - self._rollback_checked_at >= ROLLBACK_POLL_S:
            self._adopt_rollback(source)
        self._publish_snapshot(source)
        self.telemetry.record_consumed(len(records))
        lag = source.lag(self.processor.next_offsets)
        self.telemetry.record_lag(lag)
        self.live.sample(self.processor.prequential, learner, self.processor.consumed,
                         sum(lag.values()) if lag else None)
        self.telemetry.refresh(learner, self.processor.prequential, self.processor.scoring.served_paths,
                               self.processor.confidence_threshold, self.processor.model_version)

    def _publish_snapshot(self, source: Source) -> None:
        """A serving snapshot for predictor replicas, when a model store is set and one is due
        (a fenced trainer publishes none; a failed write is logged and tried at the next)."""
        learner = self.processor.learner
        version = self.processor.model_version
        if self.config.model_store is None or learner is None or version == self._snapshot_published_version \
                or time.monotonic() - self._snapshot_published_at < self.config.snapshot_every_seconds:
            return
        self._snapshot_published_at = time.monotonic()
        if not self.checkpointer.may_write(source):
            return
        try:
            calibrated = self.processor.scoring.served_threshold is not None
            publish_snapshot(self.blobs, self._predictor(), self.confidence_threshold if calibrated else None)
        except OSError as err:
            log.warning("cannot publish a serving snapshot to %s: %s", self.blobs.url, err)
            return
        self._snapshot_published_version = version
        self.telemetry.record_snapshot_published()

    def _restore(self) -> None:
        """A trainer's restore at takeover, checked as a single daemon's is at start."""
        self.checkpointer.restore(fresh_start_allowed=self.config.reset_offsets is not None)
        self._check_offsets_valid()

    def _check_offsets_valid(self) -> None:
        """The restored checkpoint's offsets are positions in the input topic it read; when the
        broker's topic of that name is another one (a new cluster, a topic made anew: its ids
        differ) they would skip or repeat events silently, so the start is refused unless
        ``--reset-offsets`` says where to read instead (also the start of a new model when every
        checkpoint was unusable: the group's offsets then count events no model holds)."""
        cp = self.checkpointer
        saved, now = cp.restored_identity, cp.input_identity
        moved = saved is not None and now is not None and saved != now
        if moved:
            reason = (f"the checkpoint's offsets are positions in topic {self.config.input_topic!r} of cluster "
                      f"{saved.get('cluster_id')} (topic id {saved.get('topic_id')}), and the broker's topic of that "
                      f"name is another (cluster {now.get('cluster_id')}, topic id {now.get('topic_id')})")
            if self.config.reset_offsets is None:
                raise CheckpointMismatchError(f"{reason}: --reset-offsets earliest|latest continues this model from "
                                              "that end of the topic, or use an empty --checkpoint-dir for a new model")
            log.warning("%s: the model continues from the topic's %s offsets (--reset-offsets)", reason,
                        self.config.reset_offsets)
        if moved or cp.lost_every_checkpoint:
            self.processor.next_offsets.clear()
            cp.own_commits = {}
            self._read_from = EARLIEST if self.config.reset_offsets == "earliest" else LATEST

    def _adopt_rollback(self, source: Source) -> bool:
        """A rollback of the model store (``hle-stream model rollback``) since this model was
        restored: drop the model in hand and continue from the rollback's checkpoint, reading the
        held partitions again from its offsets. Checked every ``ROLLBACK_POLL_S`` and before every
        checkpoint, so this trainer never writes its model over the rolled-back one."""
        self._rollback_checked_at = time.monotonic()
        if self.config.model_store is None or self._standby():
            return False
        marker = rollback_marker(self.blobs)
        if marker is None or marker == self._rollback_seen:
            return False
        self._rollback_seen = marker
        log.warning("the model store was rolled back: continuing from %s (version %s); the events after it are read "
                    "and learned again", marker.get("checkpoint"), marker.get("version"))
        self.processor.reset()
        try:
            self.checkpointer.restore(key=str(marker["checkpoint"]))
        except (CheckpointMismatchError, OSError, ValueError, KeyError) as err:
            self._refuse("cannot continue from the rollback's checkpoint",
                         CheckpointMismatchError(f"the rollback's checkpoint cannot be used: {err}"))
            return True
        # every held partition from the rolled-back model's offset, or from its first event
        source.seek({p: self.processor.next_offsets.get(p, EARLIEST) for p in source.assignment()})
        self._unsaved = 0
        if self.snapshot is not None and self.processor.learner is not None:
            self.snapshot = self._predictor()
        return True

    def _refuse(self, what: str, err: CheckpointMismatchError) -> None:
        """Stop with ``err`` (exit 2) and without a final checkpoint: the model in hand is not one to keep."""
        log.error("%s: %s; stopping without a checkpoint", what, err)
        self._refused = err
        if self.lease is not None:
            self.lease.release()
        self.loop.request_stop()

    def _after_restore(self) -> dict | None:
        """What follows every restore but a rollback's: note the store's rollback record as seen, and
        continue the versions above the newest snapshot (its marker is returned)."""
        self._rollback_seen = rollback_marker(self.blobs) if self.config.model_store is not None else None
        return self._continue_versions()

    def _predictor(self, previous: Predictor | None = None) -> Predictor:
        return self.processor.learner.predictor(previous, version=self.processor.model_version)

    def _continue_versions(self) -> dict | None:
        """After a restore, with a model store: the model may be older than the newest snapshot a
        predecessor published (snapshots are taken every few seconds, checkpoints less often), so
        its versions continue above that one: replicas never see a version go back, and a version
        never names two models. Returns the newest snapshot's marker (``None``: none)."""
        marker = newest_snapshot_marker(self.blobs) if self.config.model_store is not None else None
        if marker is None:
            return None
        restored = self.processor.model_version
        if self.processor.continue_versions_above(int(marker["version"])):
            log.warning("the restored model (version %d) is not newer than the newest published snapshot (version %d): "
                        "what was learned after its checkpoint is learned again, as versions %d and up",
                        restored, int(marker["version"]), self.processor.model_version)
        return marker

    def _track_assignment(self, source: Source) -> None:
        """After a rebalance: no lag series for partitions gone, and a loud word when this daemon
        holds only part of the topic (another member of the group trains a separate model on the
        rest; one trainer per group is the scale-out issue's rule)."""
        assigned = source.assignment()
        if assigned == self._assigned:
            return
        gone, self._assigned = self._assigned - assigned, assigned
        total = source.partition_count()
        self.telemetry.forget_partitions(gone)
        self.telemetry.record_assignment(len(assigned), total)
        self.telemetry.record_trainer_active(bool(assigned))
        if self.lease is not None:
            if not assigned:
                self._become_standby()
            return  # one active trainer holds every partition by construction
        if assigned and len(assigned) < total:
            log.error("this daemon holds only partitions %s of the %d of %s: another member of group %r reads the "
                      "rest and trains a separate model on it; run one daemon per group", sorted(assigned),
                      total, self.config.input_topic, self.config.group_id)

    def _standby(self) -> bool:
        return self.lease is not None and self.lease.generation is None

    def _become_standby(self) -> None:
        """The group gave the partitions to another trainer: what this one learned since its last
        checkpoint is not the model's any more (the next takeover restores the store's newest)."""
        if self.lease.generation is not None or self.processor.learner is not None:
            log.info("a standby now: another trainer of group %r holds the partitions", self.config.group_id)
        self.lease.release()
        self.processor.reset()
        if self.processor.lineage is not None:
            self.processor.lineage.discard_pending()
        self.snapshot, self._unsaved = None, 0

    def _output_dropped(self, topic: str, size: int, reason: str) -> None:
        self.telemetry.record_output_dropped()

    def _checkpoint_and_commit(self, source: Source, sink: DeliveringSink) -> bool:
        if self._adopt_rollback(source):
            return True  # the model in hand is gone; the rollback's checkpoint is the newest
        return self.checkpointer.checkpoint_and_commit(sink, source, lambda: self.loop.stopping,
                                                       self.loop.waiting_for_io)

    def progress(self, source: Source | None = None) -> Progress:
        processor, learner = self.processor, self.processor.learner
        stats = learner.stats() if learner is not None else None
        elapsed = time.monotonic() - self.first_record_at if self.first_record_at is not None else 0.0
        lag = None
        if source is not None:
            per_partition = source.lag(processor.next_offsets)
            lag = sum(per_partition.values()) if per_partition else None
        return Progress(consumed=processor.consumed, trained=stats.seen if stats else 0,
                        dead_letters=processor.dead_letters,
                        events_per_second=processor.consumed / elapsed if elapsed > 0 else 0.0, lag=lag,
                        accuracy={lv: round(acc, 3) for lv, acc in processor.prequential.rolling_accuracy().items()},
                        classes=stats.classes_per_level if stats else (), encoder=processor.texts.cost())

    def _report(self, source: Source) -> None:
        self._last_reported = self.processor.consumed
        progress = self.progress(source)
        if self.report:
            self.report(progress)
            return
        log.info("progress: %s", progress.line())


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
