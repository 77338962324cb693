"""The daemon's Kafka ends (``connectors.ports``' Source and DeliveringSink): a group consumer
that resumes where the daemon's rule says, and a publisher for predictions and dead letters."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from typing import Any, Callable, Iterator

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError

from connectors.assignors import OneActiveMemberAssignor
from connectors.ports import EARLIEST, LATEST, DeliveryAborted, Record, ResumeRule, SourceUnavailable
from connectors.settings import KafkaSettings

log = logging.getLogger(__name__)


def _seek(consumer: KafkaConsumer, partition: TopicPartition, offset: int) -> None:
    """Read ``partition`` from ``offset`` next, or from one of its ends (``EARLIEST``, ``LATEST``)."""
    if offset == EARLIEST:
        consumer.seek_to_beginning(partition)
    elif offset == LATEST:
        consumer.seek_to_end(partition)
    else:
        consumer.seek(partition, offset)


class _ResumeOnAssignment(AsyncConsumerRebalanceListener):
    """On assignment, read the group's committed offsets of the new partitions and seek each
    where the daemon's resume rule says.

    kafka-python runs listeners on its I/O thread, where its blocking calls fail; this one is
    async and awaits the coordinator's own offset fetch there (a kafka-python internal, pinned by
    the ``<4`` bound). The daemon's loop is blocked in ``poll`` meanwhile, so the rule reads the
    loop's state safely.
    """

    def __init__(self, consumer: KafkaConsumer, resume: ResumeRule) -> None:
        self.consumer = consumer
        self.resume = resume

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not assigned:
            return
        try:
            fetched = await self.consumer._coordinator.fetch_committed_offsets_async(assigned)
        except KafkaError as err:  # the consumer falls back to the committed offsets itself
            log.warning("cannot read the group's committed offsets of %s (%s): the consumer's own reset applies",
                        sorted(tp.partition for tp in assigned), err)
            fetched = {}
        committed = {tp.partition: (fetched[tp].offset if tp in fetched and fetched[tp].offset >= 0 else None)
                     for tp in assigned}
        by_partition = {tp.partition: tp for tp in assigned}
        for partition, offset in self.resume(committed).items():
            _seek(self.consumer, by_partition[partition], offset)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass  # the daemon commits only what it holds after each checkpoint; nothing to flush here


class KafkaSource:
    """``connectors.ports.Source`` over a kafka-python group consumer subscribed to one topic.

    ``one_active``: the group gives every partition to one member and none to the others (hot
    standbys, ``connectors.assignors``); otherwise Kafka's default assignors split them.
    """

    def __init__(self, settings: KafkaSettings, group_id: str, topic: str, resume: ResumeRule,
                 one_active: bool = False) -> None:
        self.topic = topic
        self.assignor = OneActiveMemberAssignor() if one_active else None
        strategy = {"partition_assignment_strategy": [self.assignor]} if self.assignor else {}
        self.consumer = KafkaConsumer(**settings.consumer(group_id), **strategy)
        self.consumer.subscribe([topic], listener=_ResumeOnAssignment(self.consumer, resume))

    def generation(self) -> int | None:
        if self.assignor is not None:
            return self.assignor.held_generation
        generation = self.consumer._coordinator._generation  # kafka-python internal, pinned by the <4 bound
        return None if generation.is_lost() else generation.generation_id

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        try:
            batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as err:  # kafka-python can raise from poll while the broker is away
            raise SourceUnavailable(str(err)) from err
        return [record for part in batches.values() for record in part]

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def partition_count(self) -> int:
        return len(self.consumer.partitions_for_topic(self.topic) or ())

    def seek(self, offsets: dict[int, int]) -> None:
        held = self.assignment()
        for partition, offset in offsets.items():
            if partition in held:
                _seek(self.consumer, TopicPartition(self.topic, partition), offset)

    def commit(self, offsets: dict[int, int], timeout_ms: int = 10_000) -> None:
        """Raises ``SourceUnavailable`` (a timeout included) when the group's coordinator cannot
        take the offsets."""
        if not offsets:
            return
        try:
            self.consumer.commit({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                                  for p, o in offsets.items()}, timeout_ms=timeout_ms)
        except KafkaError as err:
            raise SourceUnavailable(str(err)) from err

    def lag(self, next_offsets: dict[int, int]) -> dict[int, int]:
        """The fetch high watermark minus the next offset to read, per held partition.

        Tansu's ``end_offsets`` is wrong, the high watermark of the last fetch is right; a
        partition not fetched yet has none and is left out.
        """
        lag = {}
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                position = next_offsets.get(tp.partition)
                if position is None:  # fetched but nothing processed yet: the consumer knows where it is
                    position = self.consumer.position(tp)
                lag[tp.partition] = max(0, highwater - position)
        return lag

    def close(self) -> None:
        self.consumer.close()


def read_topic(settings: KafkaSettings, topic: str, follow: bool, idle_s: float = 2.0,
               mark_caught_up: bool = False) -> Iterator[Record | None]:
    """Every record of ``topic`` from the beginning, in offset order per partition, outside any
    consumer group; without ``follow`` it stops once nothing has arrived for ``idle_s`` (the end
    is not asked of the broker: the local broker's ListOffsets is wrong). ``mark_caught_up``: with
    ``follow``, a ``None`` is yielded once, the first time nothing arrived for ``idle_s``."""
    consumer = KafkaConsumer(**settings.client(), auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_wait_ms=settings.fetch_max_wait_ms)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        quiet_since, caught_up = time.monotonic(), False
        while follow or time.monotonic() - quiet_since < idle_s:
            batches = consumer.poll(timeout_ms=200)
            if batches:
                quiet_since = time.monotonic()
            for records in batches.values():
                yield from records
            if mark_caught_up and follow and not caught_up and time.monotonic() - quiet_since >= idle_s:
                caught_up = True
                yield None
    finally:
        consumer.close()


class BrokerUnreachable(ConnectionError):
    """No bootstrap server accepted a connection within the wait."""


def wait_for_broker(settings: KafkaSettings, timeout_s: float) -> None:
    """Return once a bootstrap server accepts a TCP connection; raise ``BrokerUnreachable`` after
    ``timeout_s`` (a plain socket, so an absent broker costs no client retry logs)."""
    deadline = time.monotonic() + timeout_s
    while not broker_reachable(settings):
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(f"no Kafka broker answers at {settings.bootstrap_servers} (waited "
                                    f"{timeout_s:g} s); start one (hle-stream broker) or point --bootstrap-servers "
                                    "at a running cluster")
        time.sleep(0.25)


def broker_reachable(settings: KafkaSettings, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connection to any bootstrap server opens: the readiness probe's view of an
    idle stream, where kafka-python's consumer just returns nothing while its broker is away."""
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout_s).close()
            return True
        except (OSError, ValueError):
            continue
    return False


DEAD_LETTER_DETAIL_CHARS = 1000
OUTPUT_HEADROOM_BYTES = 4096  # a record's key, headers and batch framing, beyond its value


def dead_letter_value(record: Any, reason: str, detail: str, max_bytes: int) -> bytes:
    """The dead-letter record for ``record``, at most ``max_bytes``: the reason, the detail (cut to
    ``DEAD_LETTER_DETAIL_CHARS``), the source coordinates and as much of the original value as
    fits, base64-encoded, with its full length and whether it was cut."""
    raw = record.value or b""
    document = {"reason": reason, "detail": detail[:DEAD_LETTER_DETAIL_CHARS], "topic": record.topic,
                "partition": record.partition, "offset": record.offset, "value_bytes": len(raw),
                "value_truncated": False, "value_b64": ""}
    room = max_bytes - len(json.dumps(document).encode())  # "value_truncated": true is shorter than false
    keep = max(0, room // 4 * 3)  # base64 turns 3 bytes into 4 characters
    document["value_truncated"] = len(raw) > keep
    document["value_b64"] = base64.b64encode(raw[:keep]).decode("ascii")
    return json.dumps(document).encode()


class Publisher:
    """Predictions and dead letters, as JSON values, delivered at least once.

    Sends are asynchronous; ``delivery_failed`` looks at the acknowledgements that have come
    back without waiting. ``deliver_all`` waits for every record sent since the last call and
    re-sends the failed ones on a fresh producer, with backoff, until Kafka has them all: a broker
    restart leaves kafka-python's idempotent producer unusable, and a dead letter or a
    prediction must not be lost with it.

    Every record fits ``max_output_bytes`` by construction: ids and labels are bounded at parse
    time, and a dead letter's copy of the original value is cut to fit (``value_truncated``; the
    original stays in the input topic at the offset the dead letter names). A record Kafka still
    refuses as too large (a topic whose ``max.message.bytes`` is below ours) is a permanent error
    for that record: logged, counted through ``on_dropped``, never retried.
    """

    def __init__(self, settings: KafkaSettings, predictions_topic: str, dead_letter_topic: str,
                 max_output_bytes: int = 1_000_000, on_dropped: Callable[[str, int, str], None] | None = None,
                 publish_predictions: bool = True) -> None:
        self.settings = settings
        self.predictions_topic = predictions_topic
        self.publish_predictions = publish_predictions  # False: a trainer beside a predictor fleet
        self.dead_letter_topic = dead_letter_topic
        self.max_output_bytes = max_output_bytes
        self.on_dropped = on_dropped or (lambda topic, size, reason: None)
        self.producer = self._new_producer()
        self._in_flight: list[tuple[str, bytes | None, bytes, Any]] = []  # topic, key, value, future
        self.healthy = True

    def _new_producer(self) -> KafkaProducer:
        return KafkaProducer(**self.settings.client(), linger_ms=5,
                             max_request_size=self.max_output_bytes + OUTPUT_HEADROOM_BYTES)

    def _send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        try:
            future = self.producer.send(topic, value, key=key)
        except MessageSizeTooLargeError as err:
            self._drop(topic, len(value), str(err))
            return
        except KafkaError as err:  # e.g. a producer a fatal error closed: re-sent by deliver_all
            log.warning("send to %s failed at once: %s", topic, err)
            future = None
        self._in_flight.append((topic, key, value, future))

    def _drop(self, topic: str, size: int, reason: str) -> None:
        log.error("a record of %d bytes for %s was refused as too large (%s): dropped, not retried", size, topic,
                  reason)
        self.on_dropped(topic, size, reason)

    def prediction(self, document: dict[str, Any]) -> None:
        if not self.publish_predictions:
            return
        # keyed by event id: a repeated prediction lands in the same partition as the first
        self._send(self.predictions_topic, json.dumps(document, allow_nan=False).encode(),
                   key=str(document["id"]).encode())

    def dead_letter(self, record: Any, reason: str, detail: str) -> None:
        """``record``: the consumed record (``topic``, ``partition``, ``offset``, ``value``)."""
        self._send(self.dead_letter_topic, dead_letter_value(record, reason, detail, self.max_output_bytes))

    def delivery_failed(self) -> bool:
        """Without blocking: forget acknowledged records and drop the ones refused for good; True
        if any other record has failed."""
        self._forget_delivered_and_refused()
        return any(item[3] is None or item[3].failed() for item in self._in_flight)

    def _forget_delivered_and_refused(self) -> None:
        waiting = []
        for topic, key, value, future in self._in_flight:
            if future is not None and future.succeeded():
                continue
            if future is not None and future.failed() and isinstance(future.exception, MessageSizeTooLargeError):
                self._drop(topic, len(value), str(future.exception))
                continue
            waiting.append((topic, key, value, future))
        self._in_flight = waiting

    def deliver_all(self, stopping: Callable[[], bool], waiting: Callable[[], None] = lambda: None,
                    flush_timeout_s: float = 5.0) -> None:
        """Block until every record sent so far is acknowledged, calling ``waiting()`` between
        rounds (the daemon's liveness tick). Raises ``DeliveryAborted`` if ``stopping()`` turns
        true while records are still undelivered."""
        backoff = 0.5
        while True:
            try:
                self.producer.flush(timeout=flush_timeout_s)
            except KafkaError as err:
                log.warning("flush failed: %s", err)
            self._forget_delivered_and_refused()
            failed = [(t, k, v) for t, k, v, f in self._in_flight]
            if not failed:
                self._in_flight.clear()
                if not self.healthy:
                    log.info("Kafka accepts records again")
                self.healthy = True
                return
            self.healthy = False
            waiting()
            if stopping():
                raise DeliveryAborted(f"{len(failed)} records undelivered at shutdown")
            log.warning("%d records undelivered; new producer and retry in %.1f s", len(failed), backoff)
            time.sleep(backoff)
            backoff = min(2 * backoff, 10.0)
            self._replace_producer()
            self._in_flight = []
            for topic, key, value in failed:
                self._send(topic, value, key)

    def _replace_producer(self) -> None:
        self._close_producer(timeout_s=0)
        try:
            self.producer = self._new_producer()
        except KafkaError as err:  # no broker to bootstrap from yet: the next round tries again
            log.warning("cannot create a producer yet: %s", err)

    def _close_producer(self, timeout_s: float) -> None:
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaError:
            # kafka-python 3.0.12's close() flushes first and raises on the undeliverable records
            # before it stops its I/O thread; stop that thread, or it lives on, retrying them.
            sender = getattr(self.producer, "_sender", None)
            if sender is not None:
                sender.force_close()
            self.producer._closed = True  # its __del__ would otherwise try (and raise) again

    def close(self) -> None:
        """Undeliverable records at shutdown are not lost: they follow the last checkpoint, whose
        events are consumed and predicted again on restart."""
        self._close_producer(timeout_s=10)
