"""In-memory source and sink: the daemon loop's logic (ordering, dead letters, checkpoint then
commit, restore, rebalances) exercised in milliseconds, and offline runs without a broker.

``MemorySource`` behaves as one member of a consumer group over an in-memory topic: it holds
some partitions, reads each from a position, and keeps the group's committed offsets. A test
moves partitions away and back with ``revoke`` and ``assign``, as a rebalance would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from connectors.ports import EARLIEST, LATEST, Record, ResumeRule, SourceUnavailable


@dataclass(frozen=True)
class RawRecord:
    """A record held in memory: what a ``Record`` needs."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class MemorySource:
    """A topic of ``partitions`` lists of values, read by one group member.

    ``committed`` is the group's offset store; it outlives a source (pass the same dict to the
    next one, as a restarted daemon finds its group's offsets in Kafka). ``unavailable`` makes
    polls and commits raise ``SourceUnavailable``, as an absent broker would.
    """

    def __init__(self, topic: str, partitions: list[list[bytes | None]], committed: dict[int, int] | None = None,
                 resume: ResumeRule = lambda committed: {}) -> None:
        self.topic = topic
        self.partitions = partitions
        self.committed = committed if committed is not None else {}
        self.resume = resume
        self.positions: dict[int, int] = {}
        self.unavailable = False
        self.commits: list[dict[int, int]] = []  # the offsets of every commit, in order
        self.generation_id = 0  # grows with every assignment, as a group's generation does
        self.assign(set(range(len(partitions))))

    def append(self, partition: int, values: list[bytes | None]) -> None:
        self.partitions[partition].extend(values)

    def assign(self, partitions: set[int]) -> None:
        """Partitions given to this member (a rebalance): each starts where the resume rule says,
        else at the group's committed offset, else at the earliest."""
        new = partitions - set(self.positions)
        self.generation_id += 1
        start = self.resume({p: self.committed.get(p) for p in sorted(new)})
        for p in new:
            self.positions[p] = self._position(p, start.get(p, self.committed.get(p, 0)))

    def seek(self, offsets: dict[int, int]) -> None:
        for partition, offset in offsets.items():
            if partition in self.positions:
                self.positions[partition] = self._position(partition, offset)

    def _position(self, partition: int, offset: int) -> int:
        """``offset``, or the index one of the partition's ends (``EARLIEST``, ``LATEST``) stands for."""
        return {EARLIEST: 0, LATEST: len(self.partitions[partition])}.get(offset, offset)

    def revoke(self, partitions: set[int]) -> None:
        """Partitions taken away (a rebalance): their unread records stay for the next owner."""
        for p in partitions:
            self.positions.pop(p, None)

    def poll(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        if self.unavailable:
            raise SourceUnavailable("the in-memory source is marked unavailable")
        records: list[Record] = []
        readable = [p for p in sorted(self.positions) if self.positions[p] < len(self.partitions[p])]
        while readable and len(records) < max_records:  # round robin, as a fetch over several partitions
            for p in list(readable):
                offset = self.positions[p]
                records.append(RawRecord(self.topic, p, offset, self.partitions[p][offset]))
                self.positions[p] = offset + 1
                if self.positions[p] == len(self.partitions[p]):
                    readable.remove(p)
                if len(records) == max_records:
                    break
        return records

    def generation(self) -> int | None:
        return self.generation_id

    def assignment(self) -> set[int]:
        return set(self.positions)

    def partition_count(self) -> int:
        return len(self.partitions)

    def commit(self, offsets: dict[int, int]) -> None:
        if self.unavailable:
            raise SourceUnavailable("the in-memory source is marked unavailable")
        self.committed.update(offsets)
        self.commits.append(dict(offsets))

    def lag(self, next_offsets: dict[int, int]) -> dict[int, int]:
        return {p: len(self.partitions[p]) - next_offsets.get(p, position) for p, position in self.positions.items()}

    def close(self) -> None:
        self.positions.clear()


@dataclass
class ListSink:
    """A sink that keeps everything in lists, delivered at once."""

    predictions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[Record, str, str]] = field(default_factory=list)
    healthy: bool = True

    def prediction(self, document: dict[str, Any]) -> None:
        self.predictions.append(document)

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.dead_letters.append((record, reason, detail))

    def delivery_failed(self) -> bool:
        return False

    def deliver_all(self, stopping: Callable[[], bool], waiting: Callable[[], None] = lambda: None) -> None:
        pass

    def close(self) -> None:
        pass
