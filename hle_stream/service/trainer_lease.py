"""Fencing for a trainer with hot standbys: only the trainer of the newest group generation writes.

Trainer candidates share one consumer group (``connectors.assignors.OneActiveMemberAssignor``)
and one model store. Kafka's group generation grows with every rebalance, so it is a fencing
token: a trainer that gets the partitions claims its generation in the store (``EPOCH_KEY``,
replaced only by a conditional write, never by an older generation), and checks the claim
before every checkpoint, snapshot and offset commit. A trainer that paused past the session
timeout (a long GC, a SIGSTOP, a frozen VM) and comes back still believes it holds the
partitions, but the store names a newer generation: it writes and commits nothing, and waits
for the group to make it a standby. The store's create-only checkpoint names close the gap
between a check and the write that follows it (``hle_stream.service.checkpoint``).
"""

from __future__ import annotations

import json
import logging
import os
import socket

from connectors.blob_store import BlobStore

log = logging.getLogger(__name__)

EPOCH_KEY = "trainer-epoch.json"


class TrainerLease:
    """This trainer's claim on the store: the group generation in which it took over."""

    def __init__(self, blobs: BlobStore, group_id: str) -> None:
        self.blobs = blobs
        self.group_id = group_id
        self.generation: int | None = None  # claimed and not yet lost

    def _read(self) -> tuple[bytes | None, dict | None]:
        raw = self.blobs.get(EPOCH_KEY)
        try:
            return raw, (json.loads(raw) if raw is not None else None)
        except ValueError:
            return raw, None

    def claim(self, generation: int) -> bool:
        """Record ``generation`` as the store's writer; False when a newer generation of this
        group holds it already (this trainer is stale). A record of another group is replaced:
        a new group (or a broker that lost its groups) starts its own count."""
        for _ in range(5):  # a concurrent claim changed the record between read and write: read again
            raw, record = self._read()
            if record and record.get("group") == self.group_id and int(record.get("generation", -1)) > generation:
                log.error("fenced: the model store names generation %s of group %r as its trainer, newer than this "
                          "trainer's %d; waiting to become a standby (if no other trainer runs, the broker lost the "
                          "group's history: delete %s from the store, or use a new --group-id)",
                          record["generation"], self.group_id, generation, EPOCH_KEY)
                self.generation = None
                return False
            claim = {"group": self.group_id, "generation": generation, "host": socket.gethostname(),
                     "pid": os.getpid()}
            if self.blobs.swap(EPOCH_KEY, raw, json.dumps(claim).encode()):
                self.generation = generation
                log.info("trainer of generation %d of group %r: this process writes the model store", generation,
                         self.group_id)
                return True
        self.generation = None
        return False

    def release(self) -> None:
        """The group moved the partitions elsewhere: this trainer is a standby until its next claim."""
        self.generation = None

    def holds(self, generation: int | None) -> bool:
        """Whether this trainer may write: the consumer still has the generation it claimed, and
        the store names no other. Reads the store (one small GET)."""
        if self.generation is None or generation != self.generation:
            return False
        try:
            _, record = self._read()
        except OSError as err:  # cannot tell: do not write (the next checkpoint tries again)
            log.warning("cannot read the trainer record (%s): not writing", err)
            return False
        return bool(record) and record.get("group") == self.group_id and record.get("generation") == self.generation
