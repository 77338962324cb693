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

import numpy as np
import torch

from connectors.blob_store import BlobStore
from connectors.ports import DeliveringSink, Record, Source
from hle_stream.contract import Event, EventError, parse_event, prediction_document, require_dtype
from hle_stream.core.config import LearnerConfig
from hle_stream.core.predictor import Predictor
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.metrics.served_threshold import DEFAULT_CONFIDENCE_THRESHOLD
from hle_stream.service.config import ReplicaConfig
from hle_stream.service.serving import HttpServer
from hle_stream.service.snapshots import newest_snapshot_marker, read_snapshot
from hle_stream.service.stream_loop import StreamLoop
from hle_stream.service.telemetry import Telemetry

log = logging.getLogger(__name__)
TEXT_REFUSED = ("a predictor replica reads features only (it has no text encoder): text events are predicted by the "
                "trainer, on its stream and its /predict")


class PredictorReplica:
    """The replica's loop, written against ``connectors.ports`` (``hle_stream.service.kafka_replica``
    is the Kafka wiring); implements what ``hle_stream.service.serving`` reads."""

    def __init__(self, config: ReplicaConfig, blobs: BlobStore, connect) -> None:
        self.config = config
        self.blobs = blobs
        self.connect = connect  # () -> (Source, DeliveringSink), called once HTTP serves
        self.telemetry = Telemetry(LearnerConfig().max_depth, "replica", "cpu", role="replica")
        self.lock = threading.Lock()
        self.snapshot: Predictor | None = None
        self.snapshot_published_at = 0.0
        self.loop = StreamLoop(config.max_batch, config.max_events)
        self.checkpoint_ok = self.writer_ok = True  # a replica writes no checkpoints
        self.live = None  # no live page: it learns nothing (its /metrics has what it serves)
        self._snapshot_threshold: float | None = None  # the trainer's calibrated threshold, from the snapshot
        self.max_abs_feature = config.max_abs_feature
        self.prequential = PrequentialAccuracy()  # empty: /classes of a replica lists no accuracy
        self.consumed = 0
        self.predicted = 0
        self.next_offsets: dict[int, int] = {}
        self._said_text = False  # the first text event skipped is logged
        self._next_commit_at = 0.0
        self._marker: dict | None = None
        self._checked_at = float("-inf")

    learner = property(lambda self: None)  # a replica holds no learner
    last_tick = property(lambda self: self.loop.last_tick)
    kafka_ok = property(lambda self: self.loop.io_ok)

    @property
    def confidence_threshold(self) -> float:
        """Its own ``confidence_threshold`` if set, else the trainer's calibrated one, else the default."""
        if self.config.confidence_threshold is not None:
            return self.config.confidence_threshold
        return DEFAULT_CONFIDENCE_THRESHOLD if self._snapshot_threshold is None else self._snapshot_threshold

    @property
    def model_finite(self) -> bool:
        return self.snapshot is None or self.snapshot.finite

    def with_text_features(self, events: list[Event]) -> list[Event]:
        if any(event.text is not None for event in events):
            raise EventError("wrong_type", TEXT_REFUSED)
        return events

    def _skip_text(self) -> None:
        if not self._said_text:
            log.warning("%s: text events are skipped (hle_replica_skipped_total)", TEXT_REFUSED)
            self._said_text = True
        self.telemetry.record_skipped()

    def request_stop(self) -> None:
        self.loop.request_stop()

    def refresh_snapshot(self) -> None:
        """Swap in the newest snapshot if the store has one newer than ours (a marker read; the
        weights are read only when they changed)."""
        self._checked_at = time.monotonic()
        marker = newest_snapshot_marker(self.blobs)
        swapped = False
        if marker is not None and marker != self._marker:
            snapshot = read_snapshot(self.blobs)
            serving = self.snapshot.version if self.snapshot is not None else -1
            if snapshot is not None and snapshot.predictor.version < serving:
                self._marker = marker  # read once: the trainer's next snapshot is a new marker
                self.telemetry.record_snapshot_regression()
                log.warning("refused snapshot version %d: it is older than version %d, which this replica serves",
                            snapshot.predictor.version, self.snapshot.version)
            elif snapshot is not None:
                self.snapshot, self.snapshot_published_at = snapshot.predictor, snapshot.published_at
                self._snapshot_threshold = snapshot.confidence_threshold
                self.telemetry.record_confidence_threshold(self.confidence_threshold)
                self._marker = {"version": snapshot.predictor.version, "published_at": snapshot.published_at}
                swapped = True
                log.info("serving snapshot version %d (%d bytes)", snapshot.predictor.version, snapshot.size_bytes)
        if self.snapshot is not None:
            newest = int(marker["version"]) if marker else self.snapshot.version
            self.telemetry.record_snapshot_served(
                self.snapshot.version, max(0.0, time.time() - self.snapshot_published_at),
                max(0, newest - self.snapshot.version), swapped)

    def run(self) -> None:
        server = None
        if self.config.http_port is not None:
            server = HttpServer(self, self.config.http_host, self.config.http_port, self.config.http)
            server.start()
        try:
            self._wait_for_first_snapshot()
            if not self.loop.stopping:
                source, sink = self.connect()
                self._next_commit_at = time.monotonic() + self.config.commit_every_seconds
                self.loop.run(self, source, sink)
        finally:
            if server is not None:
                server.stop()

    def _wait_for_first_snapshot(self) -> None:
        logged = False
        while not self.loop.stopping and self.snapshot is None:
            self.refresh_snapshot()
            self.loop.last_tick = time.monotonic()
            if self.snapshot is None:
                if not logged:
                    log.info("waiting for the trainer's first serving snapshot in %s", self.blobs.url)
                    logged = True
                time.sleep(self.config.refresh_seconds)

    # -- the loop's role (hle_stream.service.stream_loop) --------------------------------------
    def before_poll(self, source: Source) -> None:
        if time.monotonic() - self._checked_at >= self.config.refresh_seconds:
            self.refresh_snapshot()

    def process(self, source: Source, sink: DeliveringSink, records: list[Record]) -> None:
        """Predict the batch; every ``commit_every_seconds``, deliver then commit."""
        if records:
            self.predict_records(records, sink)
            self.telemetry.record_consumed(len(records))
            self.telemetry.record_lag(source.lag(self.next_offsets))
        if time.monotonic() >= self._next_commit_at:
            self.loop.deliver_and_commit(source, sink, self.next_offsets)
            self._next_commit_at = time.monotonic() + self.config.commit_every_seconds

    def finish(self, source: Source, sink: DeliveringSink) -> bool:
        self.loop.deliver_and_commit(source, sink, self.next_offsets)
        return True

    def aborted(self, err: Exception) -> None:
        log.warning("stopping with predictions undelivered (%s): their events are predicted again by the next "
                    "owner of their partitions", err)

    def closing(self, source: Source) -> None:
        pass

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
                if event.text is not None:
                    self._skip_text()
                    continue
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
