"""Who a model store (or checkpoint directory) belongs to: one consumer group, and the trained-ids
log its trainers share.

The store's checkpoints hold offsets of one group's reading of the topic, and the fencing record
counts that group's generations (``hle_stream.service.trainer_lease``). A daemon of another group
(a mistyped ``--group-id``) would start that group at its own offsets and, as a trainer, claim the
store and fence the real trainers for good. So the first daemon to write a store records its group
(``OWNER_KEY``, created once); a daemon of another group is refused at start unless told to take
the store over (``--take-over-store``), which rewrites the record. Likewise the store records the
``log_id`` of its trainers' trained-ids log (``hle_stream.service.lineage``): a trainer with
another log file, or with none when the others keep one, would break the lineage at a takeover.
"""

from __future__ import annotations

import json
import logging

from connectors.blob_store import BlobStore

log = logging.getLogger(__name__)

OWNER_KEY = "store-owner.json"


class StoreOwnedError(RuntimeError):
    """The store belongs to another group, or its trainers keep another trained-ids log."""


def bind_store(blobs: BlobStore, group_id: str, log_id: str | None, take_over: bool = False) -> None:
    """Record this daemon's group and trained-ids log as the store's (the first to write it), or
    check them against the record; ``take_over`` rewrites a record of another group or log."""
    wanted = {"group": group_id, "trained_ids_log": log_id}
    for _ in range(5):  # a concurrent first start or takeover changed the record: read again
        raw = blobs.get(OWNER_KEY)
        if raw is None:
            if blobs.put_new(OWNER_KEY, json.dumps(wanted).encode()):
                return
            continue
        try:
            record = json.loads(raw)
            owner, owner_log = str(record["group"]), record.get("trained_ids_log")
        except (ValueError, KeyError, TypeError):
            owner, owner_log = "(unreadable record)", None
        conflict = _conflict(blobs, owner, owner_log, group_id, log_id)
        if conflict is None and owner_log == log_id:
            return
        if conflict is not None and not take_over:
            raise StoreOwnedError(conflict)
        if blobs.swap(OWNER_KEY, raw, json.dumps(wanted).encode()):
            if conflict is not None:
                log.warning("--take-over-store: the model store %s now belongs to group %r (it was %r's)", blobs.url,
                            group_id, owner)
            return
    raise StoreOwnedError(f"the owner record {blobs.location(OWNER_KEY)} kept changing while this daemon read it")


def _conflict(blobs: BlobStore, owner: str, owner_log: str | None, group_id: str, log_id: str | None) -> str | None:
    """Why this daemon may not write the store (``None``: it may; a store whose record names no
    log takes this daemon's)."""
    where = blobs.url
    if owner != group_id:
        return (f"the model store {where} belongs to consumer group {owner!r}, not {group_id!r}: use "
                f"--group-id {owner}, or --take-over-store to make {group_id!r} its owner (its trainers are then "
                "refused)")
    if owner_log is not None and log_id != owner_log:
        return (f"the trainers of the model store {where} keep the trained-ids log {owner_log}, and this daemon "
                f"{'keeps none' if log_id is None else f'keeps another ({log_id})'}: use --trained-ids-log on "
                "the same file (on shared storage) in every trainer, or --take-over-store")
    return None
