"""The versions of a model in its store, and rolling back to one (``hle-stream model``).

A version is a checkpoint in the store (the newest three are kept): its ``model_version``, when
and by whom it was written, the events its model learned and its prequential accuracy per level.
Rolling back writes the chosen checkpoint again as the newest, under a new ``model_version``
above every one written or published (versions never go back, and one version names one
model), publishes its serving snapshot (replicas swap to it at their next refresh), appends the
rollback to the store's history (``HISTORY_KEY``) and names the new checkpoint in
``ROLLBACK_KEY``, which a running trainer polls: it then continues from that checkpoint, its
held partitions read again from the checkpoint's offsets (``hle_stream.service.daemon``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from connectors.blob_store import BlobStore
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.service.checkpoint import PREFIX, CheckpointStore, decode
from hle_stream.service.snapshots import newest_snapshot_marker, publish_snapshot, read_snapshot

HISTORY_KEY = "model-history.json"
ROLLBACK_KEY = "rollback.json"


class RollbackError(ValueError):
    """No checkpoint of that version in the store."""


@dataclass(frozen=True)
class ModelVersion:
    checkpoint: str  # its key in the store
    version: int  # the model_version its predictions carry
    written_at: float | None
    writer: dict[str, Any]
    events_learned: int
    accuracy: dict[int, float]  # rolling prequential accuracy per level when it was written
    offsets: dict[int, int]

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.written_at)) if self.written_at else "?"
        accuracy = " ".join(f"L{level} {value:.3f}" for level, value in self.accuracy.items()) or "-"
        origin = f" (rollback to version {self.writer['rollback_of']})" if self.writer.get("rollback_of") else ""
        return f"{self.version:>8}  {when}  {self.events_learned:>9} learned  {accuracy}  {self.checkpoint}{origin}"


def model_version_of(state: dict[str, Any]) -> int:
    """A checkpoint's model version: the train steps plus the base a takeover or rollback raised."""
    steps = state["learner"]["counters"]["steps"] if state.get("learner") else 0
    return int(steps) + int(state.get("version_base", 0))


def _describe(key: str, state: dict[str, Any]) -> ModelVersion:
    learner = state.get("learner")
    writer = state.get("writer") or {}
    return ModelVersion(key, model_version_of(state), writer.get("written_at"), writer,
                        int(learner["counters"]["seen"]) if learner else 0,
                        PrequentialAccuracy.from_state_dict(state["prequential"]).rolling_accuracy(),
                        {int(p): int(o) for p, o in state["offsets"].items()})


def _checkpoints(blobs: BlobStore) -> list[tuple[str, dict[str, Any]]]:
    """Every readable checkpoint in the store, oldest first (unreadable ones are left out)."""
    found = []
    for key in sorted(k for k in blobs.keys(PREFIX) if k.endswith(".pt")):
        blob = blobs.get(key)
        if blob is None:
            continue
        try:
            found.append((key, decode(blob, key)))
        except Exception:  # corrupt: the daemon quarantines it at its next restore
            continue
    return found


def versions(blobs: BlobStore) -> list[ModelVersion]:
    """The model's versions in the store, oldest first."""
    return [_describe(key, state) for key, state in _checkpoints(blobs)]


def history(blobs: BlobStore) -> list[dict[str, Any]]:
    """The rollbacks recorded in the store, oldest first."""
    raw = blobs.get(HISTORY_KEY)
    try:
        return list(json.loads(raw)) if raw is not None else []
    except ValueError:
        return []


def rollback(blobs: BlobStore, to_version: int) -> ModelVersion:
    """Make the checkpoint of ``to_version`` the newest, as a new version; returns it."""
    checkpoints = _checkpoints(blobs)
    chosen = [(key, state) for key, state in checkpoints if model_version_of(state) == to_version]
    if not chosen:
        known = ", ".join(str(model_version_of(state)) for _, state in checkpoints) or "none"
        raise RollbackError(f"no checkpoint of version {to_version} in {blobs.url} (versions there: {known})")
    _, state = chosen[-1]
    marker = newest_snapshot_marker(blobs)
    newest = max([model_version_of(s) for _, s in checkpoints] + [int(marker["version"]) if marker else 0])
    state = {**state, "version_base": int(state.get("version_base", 0)) + newest + 1 - to_version,
             "uncovered_from_earliest": True,  # the group's offsets are the replaced model's
             "writer": {"host": socket.gethostname(), "pid": os.getpid(), "generation": None,
                        "written_at": time.time(), "rollback_of": to_version}}
    path = CheckpointStore(blobs, exclusive=False).save(state)
    key = path.name
    learner = HierarchicalLearner.from_state_dict(state["learner"], device="cpu") if state.get("learner") else None
    if learner is not None:
        current = read_snapshot(blobs)
        publish_snapshot(blobs, learner.predictor(version=model_version_of(state)),
                         current.confidence_threshold if current is not None else None)
    rolled = _describe(key, state)
    record = {"at": rolled.written_at, "to_version": to_version, "new_version": rolled.version, "checkpoint": key,
              "replaced_version": newest, "host": state["writer"]["host"]}
    blobs.put(HISTORY_KEY, json.dumps([*history(blobs), record]).encode())
    blobs.put(ROLLBACK_KEY, json.dumps({"checkpoint": key, "version": rolled.version}).encode())
    return rolled


def rollback_marker(blobs: BlobStore) -> dict[str, Any] | None:
    """The newest rollback's ``{"checkpoint", "version"}`` (``None``: none, or unreadable)."""
    try:
        raw = blobs.get(ROLLBACK_KEY)
        return json.loads(raw) if raw is not None else None
    except (OSError, ValueError):
        return None
