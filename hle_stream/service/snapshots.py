"""Serving snapshots in the model store: what the trainer publishes and predictor replicas load.

A snapshot is a ``Predictor``'s weights, label tree and version (``Predictor.state_dict``),
checksummed like a checkpoint and loaded with ``weights_only``, plus the time it was published
so a replica can report its staleness, and the trainer's confidence threshold when it calibrates
one (``--target-precision``), so that a replica's paths are as precise as the trainer's. One key, replaced atomically: replicas always read a
whole snapshot, the newest. A small marker written after it (``MARKER_KEY``) names the newest
snapshot, so a replica polls a few bytes, not the weights, to know whether to swap.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from connectors.blob_store import BlobStore
from hle_stream.core.predictor import Predictor
from hle_stream.service.checkpoint import decode, encode

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "snapshot-latest.pt"
MARKER_KEY = "snapshot-latest.json"


@dataclass(frozen=True)
class Snapshot:
    predictor: Predictor
    published_at: float  # wall-clock seconds (the trainer's clock)
    size_bytes: int
    confidence_threshold: float | None = None  # the trainer's calibrated threshold (None: it keeps a fixed one)


def publish_snapshot(blobs: BlobStore, predictor: Predictor, confidence_threshold: float | None = None) -> int:
    """Write ``predictor`` (and the calibrated threshold it serves with, if any) as the newest
    snapshot; returns its size in bytes."""
    published_at = time.time()
    blob = encode({"predictor": predictor.state_dict(), "published_at": published_at,
                   "confidence_threshold": confidence_threshold})
    blobs.put(SNAPSHOT_KEY, blob)
    blobs.put(MARKER_KEY, json.dumps({"version": predictor.version, "published_at": published_at}).encode())
    return len(blob)


def newest_snapshot_marker(blobs: BlobStore) -> dict | None:
    """``{"version", "published_at"}`` of the newest snapshot (``None``: none yet, or unreadable)."""
    try:
        raw = blobs.get(MARKER_KEY)
        return json.loads(raw) if raw is not None else None
    except (OSError, ValueError):
        return None


def read_snapshot(blobs: BlobStore) -> Snapshot | None:
    """The newest snapshot, or ``None`` when there is none or it cannot be used (logged; the
    replica keeps the one it has)."""
    try:
        blob = blobs.get(SNAPSHOT_KEY)
        if blob is None:
            return None
        state = decode(blob, SNAPSHOT_KEY)
        threshold = state.get("confidence_threshold")  # absent before calibrated thresholds
        return Snapshot(Predictor.from_state_dict(state["predictor"]), float(state["published_at"]), len(blob),
                        None if threshold is None else float(threshold))
    except Exception as err:  # a store away, a torn or foreign blob: keep serving the current snapshot
        log.warning("cannot load the snapshot %s: %s", blobs.location(SNAPSHOT_KEY), err)
        return None
