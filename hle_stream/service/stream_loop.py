"""The one loop of the daemon and of a predictor replica: poll a micro-batch, hand it to the role
that processes it, until stopped or ``max_events`` consumed; then the role's final commit.

What the loop owns, for both: a source that is away is retried (the loop keeps ticking, not ready
meanwhile), a destination that failed is waited for before the next batch, readiness follows the
sink and the partitions held, a stop while output is undelivered ends without the final commit
(the role says what that costs), and the source and sink are closed whatever happens. What is
committed and when is the role's: the trainer checkpoints, then commits; a replica delivers, then
commits (``deliver_and_commit``).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from connectors.ports import DeliveringSink, DeliveryAborted, Record, Source, SourceUnavailable

log = logging.getLogger(__name__)

SOURCE_RETRY_S = 0.5  # after a failed poll
POLL_TIMEOUT_S = 0.5


class Role(Protocol):
    """What runs inside the loop (the daemon, a predictor replica)."""

    @property
    def consumed(self) -> int:
        """Records consumed so far (``max_events`` counts these)."""
        ...

    def before_poll(self, source: Source) -> None:
        """Once per turn, whether or not records came (e.g. a replica looks for a newer snapshot)."""
        ...

    def process(self, source: Source, sink: DeliveringSink, records: list[Record]) -> None:
        """One micro-batch (possibly empty), and the commit when one is due."""
        ...

    def finish(self, source: Source, sink: DeliveringSink) -> bool:
        """The final commit of a clean stop; False when it could not be made."""
        ...

    def aborted(self, err: DeliveryAborted) -> None:
        """Stopped while output was undelivered: say what happens to it."""
        ...

    def closing(self, source: Source) -> None:
        """After the loop, before the source and sink are closed (a last progress report)."""
        ...


class StreamLoop:
    """Owns the stop flag and the loop's liveness and readiness, which HTTP probes read."""

    def __init__(self, max_batch: int, max_events: int | None) -> None:
        self.max_batch = max_batch
        self.max_events = max_events
        self.stopping = False
        self.last_tick = time.monotonic()  # liveness: the loop went round (or waits on I/O) recently
        self.io_ok = False  # readiness: the sink delivers and the source holds partitions

    def request_stop(self) -> None:
        """Finish the batch in hand, make the final commit, close (SIGTERM)."""
        self.stopping = True

    def waiting_for_io(self) -> None:
        """Called while the loop waits for the sink or the source: alive, but not ready."""
        self.last_tick = time.monotonic()
        self.io_ok = False

    def run(self, role: Role, source: Source, sink: DeliveringSink) -> bool:
        """Until stopped or ``max_events`` consumed. False: the final commit could not be made."""
        finished = True
        try:
            while not self.stopping and (self.max_events is None or role.consumed < self.max_events):
                role.before_poll(source)
                if sink.delivery_failed():  # the destination went away: wait for it, not ready
                    self.io_ok = False
                    sink.deliver_all(lambda: self.stopping, self.waiting_for_io)
                records = self._poll(source, role)
                if records is None:
                    continue
                self.io_ok = sink.healthy and bool(source.assignment())
                role.process(source, sink, records)
            finished = role.finish(source, sink)
        except DeliveryAborted as err:
            role.aborted(err)
        finally:
            role.closing(source)
            source.close()
            sink.close()
        return finished

    def _poll(self, source: Source, role: Role) -> list[Record] | None:
        limit = self.max_batch if self.max_events is None else min(self.max_batch, self.max_events - role.consumed)
        try:
            records = source.poll(max_records=limit, timeout_s=POLL_TIMEOUT_S)
        except SourceUnavailable as err:
            log.warning("poll failed (%s); retrying", err)
            self.waiting_for_io()
            time.sleep(SOURCE_RETRY_S)
            return None
        self.last_tick = time.monotonic()
        return records

    def deliver_and_commit(self, source: Source, sink: DeliveringSink, next_offsets: dict[int, int]) -> None:
        """Every output acknowledged, then the offsets of the partitions still held committed (a
        revoked partition's offset is its new owner's). Raises ``DeliveryAborted`` when stopped first."""
        sink.deliver_all(lambda: self.stopping, self.waiting_for_io)
        held = source.assignment()
        try:
            source.commit({p: o for p, o in next_offsets.items() if p in held})
        except SourceUnavailable as err:  # the next commit catches up; at worst events are processed twice
            log.warning("offset commit failed: %s", err)
