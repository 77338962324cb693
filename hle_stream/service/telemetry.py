"""The daemon's Prometheus series (prometheus-client), with bounded labels only.

Labels are ``level`` (hierarchy depth, at most ``max_depth``), ``partition`` (the input topic's
partitions), ``reason`` (the fixed dead-letter reasons) and ``source`` (stream or http): never a
class, since classes grow without bound. Per-class detail is served as JSON (``/classes``).

Counters and histograms are updated as the loop goes; the gauges that describe the learner
(accuracy, classes, memory) are refreshed once per micro-batch, which costs a few dictionary
reads, not a pass over the events.
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

import torch
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from hle_stream.contract import DEAD_LETTER_REASONS
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.metrics.served_paths import ServedPathQuality

# A CPU train step on a micro-batch takes 10 ms .. 2 s; a prediction 0.5 ms .. 200 ms.
TRAIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREDICT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CHECKPOINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
THROUGHPUT_WINDOW_S = 5.0
# A label comes seconds (a downstream system) to days (a person) after its event.
LABEL_DELAY_BUCKETS = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0, 604800.0)
JOIN_OUTCOMES = ("joined", "refined", "upgraded_in_memory", "duplicate", "conflict", "expired", "unknown")

disable_created_metrics()  # no *_created series: they double the series count for nothing


def _package_version() -> str:
    try:
        return version("hle-stream")
    except PackageNotFoundError:
        return "unknown"


class Telemetry:
    """Every series the daemon exports, in a registry of its own (served on ``/metrics``)."""

    exported = True

    def __init__(self, max_depth: int, method: str, device: str, role: str = "daemon") -> None:
        """``role``: ``daemon`` (a single daemon or a trainer) or ``replica``; each exports only its
        own series (a series it never sets would read 0 and mislead a dashboard or an alert)."""
        self.registry = registry = CollectorRegistry()
        trainer = registry if role == "daemon" else None  # None: recorded into, never exported
        replica = registry if role == "replica" else None
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds, fds
        PlatformCollector(registry=registry)
        self.max_depth = max_depth
        levels = [str(lv) for lv in range(1, max_depth + 1)]

        Info("hle_build", "Version, torch, device and method of this daemon.", registry=registry).info(
            {"version": _package_version(), "torch": torch.__version__, "device": device, "method": method})
        self.consumed = Counter("hle_events_consumed_total", "Records read from the input topic.", registry=registry)
        self.predicted = Counter("hle_events_predicted_total", "Events predicted (stream and HTTP).", ["source"],
                                 registry=registry)
        self.trained = Counter("hle_events_trained_total", "Labelled events given to the learner.", registry=trainer)
        self.dead_letters = Counter("hle_dead_letters_total", "Records sent to the dead-letter topic, by reason.",
                                    ["reason"], registry=trainer)
        self.drift = Counter("hle_drift_detections_total",
                             "ADWIN detections on the prequential error, per level.", ["level"], registry=trainer)
        self.train_seconds = Histogram("hle_train_batch_duration_seconds",
                                       "Learner update time per micro-batch (its train steps included).",
                                       buckets=TRAIN_BUCKETS, registry=trainer)
        self.encode_seconds = Histogram("hle_text_encode_duration_seconds", "Text encoder time per micro-batch of "
                                        "text events.", buckets=TRAIN_BUCKETS, registry=trainer)
        self.encoded = Counter("hle_text_events_encoded_total", "Text events turned into features by the encoder.",
                               registry=trainer)
        self.predict_seconds = Histogram("hle_predict_duration_seconds", "Prediction time per call.", ["source"],
                                         buckets=PREDICT_BUCKETS, registry=registry)
        self.model_version = Gauge("hle_model_version", "The model_version in predictions: train steps, continued "
                                   "above every published snapshot after a takeover; a replica's is the one it serves.",
                                   registry=registry)
        self.throughput = Gauge("hle_throughput_events_per_second",
                                f"Events consumed per second over the last {THROUGHPUT_WINDOW_S:.0f} s or more.",
                                registry=registry)
        self.rolling_accuracy = Gauge("hle_prequential_accuracy_ratio",
                                      "Prequential accuracy over the last window of labelled events, per level.",
                                      ["level"], registry=trainer)
        self.anytime_accuracy = Gauge("hle_anytime_accuracy_ratio",
                                      "Mean of the rolling prequential accuracy since the level appeared "
                                      "(the online counterpart of A_auc), per level.", ["level"], registry=trainer)
        self.served_precision = Gauge("hle_served_node_precision_ratio",
                                      "Share of the served path's nodes that the label confirms (nodes at levels "
                                      "the label names), since the start of the model.", registry=trainer)
        self.served_depth = Gauge("hle_served_depth_mean", "Mean number of levels in a served path (it stops below "
                                  "--confidence-threshold), over the labelled events.", registry=trainer)
        self.mistake_severity = Gauge("hle_served_mistake_severity_mean",
                                      "Mean tree distance from a wrong deepest served node to the true node of its "
                                      "level (2: a sibling, 4: a cousin, ...).", registry=trainer)
        self.confidence_threshold = Gauge("hle_confidence_threshold",
                                          "Probability below which a served path stops: --confidence-threshold, or "
                                          "the one calibrated to --target-precision.", registry=registry)
        self.known_classes = Gauge("hle_known_classes", "Classes known per level.", ["level"], registry=trainer)
        # A counter that exists from the start, so increase() marks every expansion; a new level's
        # gauge series is born with all the classes that arrived before the next scrape, and its
        # changes() would miss it. After a restart the restored classes count once.
        self.classes_discovered = Counter("hle_classes_discovered_total", "Classes added to the label tree.",
                                          registry=trainer)
        self._classes_counted = 0
        self.memory_samples = Gauge("hle_replay_memory_samples", "Replay memory samples by labelled level.",
                                    ["level"], registry=trainer)
        self.memory_share = Gauge("hle_replay_memory_share_ratio", "Share of the replay memory per labelled level.",
                                  ["level"], registry=trainer)
        self.memory_capacity = Gauge("hle_replay_memory_capacity_samples", "Replay memory capacity.",
                                     registry=trainer)
        self.memory_bytes = Gauge("hle_replay_memory_bytes", "Bytes held by the replay memory's tensors.",
                                  registry=trainer)
        self.lag = Gauge("hle_consumer_lag_messages",
                         "Fetch high watermark minus the next offset to read, per input partition.", ["partition"],
                         registry=registry)
        self.partitions_assigned = Gauge("hle_input_partitions_assigned",
                                         "Input partitions this daemon holds (below hle_input_partitions: another "
                                         "group member trains a separate model on the rest).", registry=registry)
        self.partitions_total = Gauge("hle_input_partitions", "Partitions of the input topic.", registry=registry)
        self.checkpoint_seconds = Histogram("hle_checkpoint_duration_seconds", "Time to write a checkpoint.",
                                            buckets=CHECKPOINT_BUCKETS, registry=trainer)
        self.checkpoint_time = Gauge("hle_checkpoint_last_success_timestamp_seconds",
                                     "Unix time of the last checkpoint written.", registry=trainer)
        self.checkpoint_corruptions = Counter("hle_checkpoint_corruptions_total",
                                              "Unusable checkpoints found at start (quarantined; an older one used).",
                                              registry=trainer)
        self.checkpoint_bytes = Gauge("hle_checkpoint_size_bytes", "Size of the last checkpoint written.",
                                      registry=trainer)
        self.checkpoint_failures = Counter("hle_checkpoint_failures_total",
                                           "Checkpoint writes that failed (disk full, no descriptors); retried.",
                                           registry=trainer)
        self.output_dropped = Counter("hle_output_dropped_total",
                                      "Output records Kafka refused as too large (permanent; never retried).",
                                      registry=registry)
        # Label events joined with earlier features (delayed and refined labels)
        self.label_delay = Histogram("hle_label_delay_seconds", "Seconds from an event's features to its label "
                                     "event (and to each finer label).", buckets=LABEL_DELAY_BUCKETS, registry=trainer)
        self.joins = Counter("hle_label_joins_total", "Label events by outcome: joined (first label, trained), "
                             "refined (a finer label, trained again), upgraded_in_memory (a finer label for a sample "
                             "in the replay memory), duplicate and conflict (ignored), expired and unknown "
                             "(dead-lettered).", ["outcome"], registry=trainer)
        self.join_entries = Gauge("hle_join_store_entries", "Events whose features wait for a (finer) label.",
                                  registry=trainer)
        self.join_bytes = Gauge("hle_join_store_bytes", "Bytes held by the join store's features.", registry=trainer)
        for outcome in JOIN_OUTCOMES:
            self.joins.labels(outcome)
        # The compute budget (--train-budget)
        self.skipped_training = Counter("hle_events_skipped_training_total", "Labelled events predicted and "
                                        "remembered without a gradient step, to keep up with the stream.",
                                        registry=trainer)
        self.train_steps_rate = Gauge("hle_train_steps_per_second", f"Gradient steps per second over the last "
                                      f"{THROUGHPUT_WINDOW_S:.0f} s or more.", registry=trainer)
        self.train_budget = Gauge("hle_train_budget", "The budget in force: the share of labelled micro-batches "
                                  "trained on (auto, unlimited), or gradient steps per second (a fixed budget).",
                                  registry=trainer)
        self._steps_window_start, self._steps_at_window_start = time.monotonic(), None
        # Scale-out: a trainer with standbys, serving snapshots, predictor replicas.
        self.trainer_active = Gauge("hle_trainer_active", "1 while this trainer holds the input partitions and "
                                    "may write the model store; 0 while a standby.", registry=trainer)
        self.fenced = Counter("hle_trainer_fenced_total", "Checkpoints and commits refused because a newer "
                              "trainer holds the model store.", registry=trainer)
        self.snapshot_published = Gauge("hle_snapshot_published_timestamp_seconds",
                                        "Unix time of the last serving snapshot this trainer published.",
                                        registry=trainer)
        self.snapshot_age = Gauge("hle_snapshot_age_seconds", "Seconds since the trainer published the snapshot "
                                  "this replica serves.", registry=replica)
        self.snapshot_staleness = Gauge("hle_snapshot_staleness_versions", "Train steps between the newest "
                                        "published snapshot and the one this replica serves.", registry=replica)
        self.replica_skipped = Counter("hle_replica_skipped_total", "Records a predictor replica could not parse "
                                       "(skipped; the trainer dead-letters them).", registry=replica)
        self.snapshot_swaps = Counter("hle_snapshot_swaps_total", "Snapshots this replica swapped in.",
                                      registry=replica)
        self.snapshot_regressions = Counter("hle_snapshot_regressions_refused_total", "Snapshots this replica "
                                            "refused because their version is below the one it serves.",
                                            registry=replica)
        # Mirrors of the learner's own counters (they survive restarts in its checkpoint).
        self.nonfinite_steps = Gauge("hle_nonfinite_steps_skipped", "Train steps skipped by the numerical guard "
                                     "(a NaN or Inf loss or gradient), over the model's lineage.", registry=trainer)
        self.quarantined = Gauge("hle_quarantined_samples", "Samples dropped from the replay memory by the "
                                 "numerical guard, over the model's lineage.", registry=trainer)
        self.discriminant_rejected = Gauge("hle_discriminant_rejected_samples", "Samples the streaming discriminant "
                                           "left out of its class means as outliers (absurdly large features), over "
                                           "the model's lineage.", registry=trainer)
        self.gpu_allocated = Gauge("hle_gpu_memory_allocated_bytes", "CUDA memory allocated by tensors.",
                                   registry=registry)
        self.gpu_reserved = Gauge("hle_gpu_memory_reserved_bytes", "CUDA memory reserved by the caching allocator.",
                                  registry=registry)
        # Known label values up front, so dashboards and alerts see zeros rather than gaps.
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for level in levels:
            self.drift.labels(level)
        for source in ("stream", "http"):
            self.predicted.labels(source)
            self.predict_seconds.labels(source)
        self._window_start, self._window_count = time.monotonic(), 0

    # -- loop events ------------------------------------------------------------------------
    def record_consumed(self, count: int) -> None:
        self.consumed.inc(count)
        self._window_count += count
        now = time.monotonic()
        if now - self._window_start >= THROUGHPUT_WINDOW_S:
            self.throughput.set(self._window_count / (now - self._window_start))
            self._window_start, self._window_count = now, 0

    def record_dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()

    def record_prediction(self, source: str, count: int, seconds: float) -> None:
        self.predicted.labels(source).inc(count)
        self.predict_seconds.labels(source).observe(seconds)

    def record_training(self, count: int, seconds: float) -> None:
        self.trained.inc(count)
        self.train_seconds.observe(seconds)

    def record_encoding(self, count: int, seconds: float) -> None:
        self.encoded.inc(count)
        self.encode_seconds.observe(seconds)

    def record_join(self, outcome: str) -> None:
        self.joins.labels(outcome).inc()

    def record_label_delay(self, seconds: float) -> None:
        self.label_delay.observe(max(0.0, seconds))

    def record_join_store(self, entries: int, nbytes: int) -> None:
        self.join_entries.set(entries)
        self.join_bytes.set(nbytes)

    def record_remembered_only(self, count: int) -> None:
        self.trained.inc(count)
        self.skipped_training.inc(count)

    def record_budget(self, in_force: float, steps: int) -> None:
        """Once per micro-batch: the budget in force, and the model's step count (for steps/s)."""
        self.train_budget.set(in_force)
        now = time.monotonic()
        if self._steps_at_window_start is None:
            self._steps_window_start, self._steps_at_window_start = now, steps
        elif now - self._steps_window_start >= THROUGHPUT_WINDOW_S:
            self.train_steps_rate.set((steps - self._steps_at_window_start) / (now - self._steps_window_start))
            self._steps_window_start, self._steps_at_window_start = now, steps

    def record_drift(self, level: int) -> None:
        self.drift.labels(str(level)).inc()

    def record_checkpoint(self, seconds: float, size_bytes: int) -> None:
        self.checkpoint_seconds.observe(seconds)
        self.checkpoint_time.set(time.time())
        self.checkpoint_bytes.set(size_bytes)

    def record_checkpoint_failure(self) -> None:
        self.checkpoint_failures.inc()

    def record_output_dropped(self) -> None:
        self.output_dropped.inc()

    def record_fenced(self) -> None:
        self.fenced.inc()

    def record_skipped(self) -> None:
        self.replica_skipped.inc()

    def record_snapshot_published(self) -> None:
        self.snapshot_published.set(time.time())

    def record_snapshot_served(self, version: int, age_s: float, staleness_versions: int, swapped: bool) -> None:
        self.model_version.set(version)
        self.snapshot_age.set(age_s)
        self.snapshot_staleness.set(staleness_versions)
        if swapped:
            self.snapshot_swaps.inc()

    def record_snapshot_regression(self) -> None:
        self.snapshot_regressions.inc()

    def record_corrupt_checkpoints(self, count: int) -> None:
        self.checkpoint_corruptions.inc(count)

    def record_assignment(self, assigned: int, total: int) -> None:
        self.partitions_assigned.set(assigned)
        self.partitions_total.set(total)

    def forget_partitions(self, partitions: set[int]) -> None:
        """No lag series for partitions this daemon no longer reads."""
        for partition in partitions:
            try:
                self.lag.remove(str(partition))
            except KeyError:
                pass

    def record_lag(self, lag: dict[int, int]) -> None:
        for partition, messages in lag.items():
            self.lag.labels(str(partition)).set(messages)

    def record_trainer_active(self, active: bool) -> None:
        self.trainer_active.set(1 if active else 0)

    def record_confidence_threshold(self, value: float) -> None:
        self.confidence_threshold.set(value)

    # -- state gauges, once per micro-batch ---------------------------------------------------
    def refresh(self, learner: HierarchicalLearner | None, prequential: PrequentialAccuracy,
                served_paths: ServedPathQuality, confidence_threshold: float, model_version: int) -> None:
        self.record_confidence_threshold(confidence_threshold)
        for level, value in prequential.rolling_accuracy().items():
            self.rolling_accuracy.labels(str(level)).set(value)
        for level, value in prequential.anytime_accuracy().items():
            self.anytime_accuracy.labels(str(level)).set(value)
        for gauge, value in ((self.served_precision, served_paths.precision),
                             (self.served_depth, served_paths.mean_depth),
                             (self.mistake_severity, served_paths.mistake_severity)):
            if value is not None:
                gauge.set(value)
        if learner is None:
            return
        stats = learner.stats()
        self.model_version.set(model_version)
        self.nonfinite_steps.set(stats.nonfinite_steps)
        self.quarantined.set(stats.quarantined)
        self.discriminant_rejected.set(stats.discriminant_rejected)
        for level, count in enumerate(stats.classes_per_level, start=1):
            self.known_classes.labels(str(level)).set(count)
        total_classes = sum(stats.classes_per_level)
        if total_classes > self._classes_counted:
            self.classes_discovered.inc(total_classes - self._classes_counted)
            self._classes_counted = total_classes
        for level in range(1, len(stats.classes_per_level) + 1):
            samples = stats.memory_per_level.get(level, 0)
            self.memory_samples.labels(str(level)).set(samples)
            self.memory_share.labels(str(level)).set(samples / stats.memory_size if stats.memory_size else 0.0)
        self.memory_capacity.set(stats.memory_capacity)
        self.memory_bytes.set(stats.memory_bytes)
        if learner.device.type == "cuda":
            self.gpu_allocated.set(torch.cuda.memory_allocated(learner.device))
            self.gpu_reserved.set(torch.cuda.memory_reserved(learner.device))


def _ignore(*args: object, **kwargs: object) -> None:
    return None


class NoTelemetry:
    """What a process records into when metrics are off (``--no-metrics``): every ``record_*``,
    ``refresh`` and ``forget_partitions`` of ``Telemetry`` is accepted and dropped, so the code
    that records never asks whether metrics are on."""

    exported = False

    def __getattr__(self, name: str):
        if not name.startswith("_") and callable(getattr(Telemetry, name, None)):
            return _ignore
        raise AttributeError(name)


NO_TELEMETRY = NoTelemetry()
