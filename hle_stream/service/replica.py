"""A predictor replica (``hle-stream serve``): predicts every event with the newest serving snapshot.

Replicas are stateless: they share a consumer group of their own on the input topic (Kafka splits
the partitions among them), load the snapshot the active trainer publishes to the model store
(``hle_stream.service.snapshots``), publish one prediction per event (with its
``model_version``) and answer ``POST /predict``. A newer snapshot is loaded beside the one in use
and swapped in by one assignment, so neither the stream nor HTTP pauses for it.

Delivery is at least once: offsets are committed only after every prediction before them is
acknowledged, so a replica that dies leaves its uncommitted events to the next owner of its
partitions. A record a replica cannot parse is skipped and counted (``hle_replica_skipped_total``),
not dead-lettered: the trainer dead-letters every bad record once, and replicas would double that.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from connectors.blob_store import BlobStore
from connectors.ports import DeliveringSink, DeliveryAborted, Record, Source, SourceUnavailable
from hle_stream.contract import DEFAULT_MAX_ABS_FEATURE, EventError, parse_event, prediction_document, require_dtype
from hle_stream.core.config import LearnerConfig
from hle_stream.core.predictor import Predictor
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.metrics.served_threshold import DEFAULT_CONFIDENCE_THRESHOLD
from hle_stream.service.serving import HttpLimits, HttpServer
from hle_stream.service.snapshots import newest_snapshot_marker, read_snapshot
from hle_stream.service.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaConfig:
    input_topic: str = "hle-events"
    predictions_topic: str = "hle-predictions"
    group_id: str = "hle-stream-predictors"  # not the trainers' group: replicas split the partitions
    max_batch: int = 256
    refresh_seconds: float = 1.0  # how often the store is asked for a newer snapshot
    commit_every_seconds: float = 5.0
    confidence_threshold: float | None = None  # None: the trainer's, carried by its snapshot (else the default)
    max_message_bytes: int = 4 << 20
    max_abs_feature: float = DEFAULT_MAX_ABS_FEATURE
    http_host: str = "127.0.0.1"
    http_port: int | None = 8081
    http: HttpLimits = field(default_factory=lambda: HttpLimits(predict_share=0.8))  # predicting is its job
    max_events: int | None = None  # stop after consuming this many (tests, benchmarks)


class PredictorReplica:
    """The replica's loop, written against ``connectors.ports`` (``hle_stream.service.kafka_replica``
    is the Kafka wiring); implements what ``hle_stream.service.serving`` reads."""

    def __init__(self, config: ReplicaConfig, blobs: BlobStore, connect) -> None:
        self.config = config
        self.blobs = blobs
        self.connect = connect  # () -> (Source, DeliveringSink), called once HTTP serves
        self.telemetry = Telemetry(LearnerConfig().max_depth, "replica", "cpu")
        self.lock = threading.Lock()
        self.snapshot: Predictor | None = None
        self.snapshot_published_at = 0.0
        self.last_tick = time.monotonic()
        self.kafka_ok = False
        self.checkpoint_ok = True  # a replica writes no checkpoints
        self._snapshot_threshold: float | None = None  # the trainer's calibrated threshold, from the snapshot
        self.max_abs_feature = config.max_abs_feature
        self.prequential = PrequentialAccuracy()  # empty: /classes of a replica lists no accuracy
        self.consumed = 0
        self.predicted = 0
        self.next_offsets: dict[int, int] = {}
        self._stop = False
        self._marker: dict | None = None
        self._checked_at = float("-inf")

    learner = property(lambda self: None)  # a replica holds no learner

    @property
    def confidence_threshold(self) -> float:
        """Its own ``confidence_threshold`` if set, else the trainer's calibrated one, else the default."""
        if self.config.confidence_threshold is not None:
            return self.config.confidence_threshold
        return DEFAULT_CONFIDENCE_THRESHOLD if self._snapshot_threshold is None else self._snapshot_threshold

    @property
    def model_finite(self) -> bool:
        return self.snapshot is None or self.snapshot.finite

    def request_stop(self) -> None:
        self._stop = True

    def refresh_snapshot(self) -> None:
        """Swap in the newest snapshot if the store has one newer than ours (a marker read; the
        weights are read only when they changed)."""
        self._checked_at = time.monotonic()
        marker = newest_snapshot_marker(self.blobs)
        swapped = False
        if marker is not None and marker != self._marker:
            snapshot = read_snapshot(self.blobs)
            if snapshot is not None:
                self.snapshot, self.snapshot_published_at = snapshot.predictor, snapshot.published_at
                self._snapshot_threshold = snapshot.confidence_threshold
                self.telemetry.record_confidence_threshold(self.confidence_threshold)
                self._marker = {"version": snapshot.predictor.version, "published_at": snapshot.published_at}
                swapped = True
                log.info("serving snapshot version %d (%d bytes)", snapshot.predictor.version, snapshot.size_bytes)
        if self.snapshot is not None:
            newest = int(marker["version"]) if marker else self.snapshot.version
            self.telemetry.record_snapshot_served(max(0.0, time.time() - self.snapshot_published_at),
                                                  max(0, newest - self.snapshot.version), swapped)

    def run(self) -> None:
        server = None
        if self.config.http_port is not None:
            server = HttpServer(self, self.config.http_host, self.config.http_port, self.config.http)
            server.start()
        try:
            self._wait_for_first_snapshot()
            if not self._stop:
                self._run()
        finally:
            if server is not None:
                server.stop()

    def _wait_for_first_snapshot(self) -> None:
        logged = False
        while not self._stop and self.snapshot is None:
            self.refresh_snapshot()
            self.last_tick = time.monotonic()
            if self.snapshot is None:
                if not logged:
                    log.info("waiting for the trainer's first serving snapshot in %s", self.blobs.url)
                    logged = True
                time.sleep(self.config.refresh_seconds)

    def _run(self) -> None:
        cfg = self.config
        source, sink = self.connect()
        next_commit_at = time.monotonic() + cfg.commit_every_seconds
        try:
            while not self._stop and (cfg.max_events is None or self.consumed < cfg.max_events):
                if time.monotonic() - self._checked_at >= cfg.refresh_seconds:
                    self.refresh_snapshot()
                try:
                    records = source.poll(max_records=cfg.max_batch, timeout_s=0.5)
                except SourceUnavailable as err:
                    log.warning("poll failed (%s); retrying", err)
                    self.kafka_ok = False
                    time.sleep(0.5)
                    continue
                self.last_tick = time.monotonic()
                self.kafka_ok = sink.healthy and bool(source.assignment())
                if records:
                    self.predict_records(records, sink)
                    self.telemetry.record_consumed(len(records))
                    self.telemetry.record_lag(source.lag(self.next_offsets))
                if time.monotonic() >= next_commit_at:
                    self._deliver_and_commit(source, sink)
                    next_commit_at = time.monotonic() + cfg.commit_every_seconds
            self._deliver_and_commit(source, sink)
        except DeliveryAborted as err:
            log.warning("stopping with predictions undelivered (%s): their events are predicted again by the next "
                        "owner of their partitions", err)
        finally:
            source.close()
            sink.close()

    def predict_records(self, records: list[Record], sink: DeliveringSink) -> None:
        """One prediction per parseable record, with the snapshot in use when the batch started."""
        snapshot = self.snapshot
        events = []
        for record in records:
            self.consumed += 1
            self.next_offsets[record.partition] = record.offset + 1
            try:
                event = parse_event(record.value, snapshot.input_spec.shape, None, self.config.max_message_bytes,
                                    self.config.max_abs_feature)
                require_dtype(event, snapshot.input_spec.dtype)
            except EventError:
                self.telemetry.record_skipped()
                continue
            events.append(event)
        if not events:
            return
        started = time.perf_counter()
        paths = snapshot.predict_paths(torch.from_numpy(np.stack([e.x for e in events])), self.confidence_threshold)
        self.telemetry.record_prediction("stream", len(events), time.perf_counter() - started)
        for event, path in zip(events, paths):
            sink.prediction(prediction_document(event.id, snapshot.version, path, event.label))
        self.predicted += len(events)

    def _deliver_and_commit(self, source: Source, sink: DeliveringSink) -> None:
        sink.deliver_all(lambda: self._stop, self._waiting)
        held = source.assignment()
        offsets = {p: o for p, o in self.next_offsets.items() if p in held}
        try:
            source.commit(offsets)
        except SourceUnavailable as err:  # the next commit catches up; at worst events are predicted twice
            log.warning("offset commit failed: %s", err)

    def _waiting(self) -> None:
        self.last_tick = time.monotonic()
        self.kafka_ok = False
