"""What the daemon needs from the outside world, as Protocols: a partitioned source of raw
records it commits offsets to, and a sink for what it answers. ``connectors.kafka_io`` is the
Kafka implementation, ``connectors.memory`` the in-memory one (tests, offline runs); the daemon
loop is written against these and never sees a client library's types or errors.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol


class Record(Protocol):
    """A consumed record: its coordinates and its raw bytes (kafka-python's ``ConsumerRecord`` is one)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


ResumeRule = Callable[[dict[int, int | None]], dict[int, int]]
"""Given the partitions just assigned and the group's committed offset of each (``None``: none),
where to start reading each one (an offset, or ``EARLIEST`` / ``LATEST``: that end of the
partition); a partition left out starts at the committed offset, or at the earliest when there is
none."""

EARLIEST, LATEST = -2, -1  # Kafka's own codes for the two ends of a partition (ListOffsets)


class SourceUnavailable(RuntimeError):
    """The source cannot be read or committed to right now (the broker is away); try again."""


class Source(Protocol):
    """Records of one topic, from the partitions the consumer group gives this member."""

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records``, in offset order per partition; raises ``SourceUnavailable``."""
        ...

    def assignment(self) -> set[int]:
        """The partitions this member holds now."""
        ...

    def partition_count(self) -> int:
        """How many partitions the topic has (0 while unknown)."""
        ...

    def generation(self) -> int | None:
        """The consumer-group generation in which this member got its partitions: a fencing
        token that grows with every rebalance (``None`` while unknown)."""
        ...

    def seek(self, offsets: dict[int, int]) -> None:
        """Read each held partition from the given offset (or ``EARLIEST`` / ``LATEST``) next (a
        model rolled back to an earlier checkpoint reads again what it no longer holds)."""
        ...

    def commit(self, offsets: dict[int, int]) -> None:
        """Store ``offsets`` (partition -> next offset to read) as the group's; raises ``SourceUnavailable``."""
        ...

    def lag(self, next_offsets: dict[int, int]) -> dict[int, int]:
        """Per held partition with a known end: records after ``next_offsets`` not yet read."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where the outcome of each record goes."""

    def prediction(self, document: dict[str, Any]) -> None: ...

    def dead_letter(self, record: Record, reason: str, detail: str) -> None: ...


class DeliveryAborted(RuntimeError):
    """Delivery was given up because the daemon is stopping; the records may not be delivered."""


class DeliveringSink(Sink, Protocol):
    """A sink whose records are delivered asynchronously and acknowledged later (Kafka)."""

    healthy: bool  # False while records wait for a destination that is away

    def delivery_failed(self) -> bool:
        """Without blocking: whether a record sent so far has failed to arrive."""
        ...

    def deliver_all(self, stopping: Callable[[], bool], waiting: Callable[[], None] = lambda: None) -> None:
        """Block until every record sent so far is acknowledged, calling ``waiting()`` between
        retries; raise ``DeliveryAborted`` if ``stopping()`` turns true first."""
        ...

    def close(self) -> None: ...
