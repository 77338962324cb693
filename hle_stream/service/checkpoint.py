"""Checkpoints in a model store: written atomically, checksummed, loaded without running code, the last K kept.

A file is one header line, ``HLECKPT <format version> <sha256 of the payload>``, then the payload:
a ``torch.save`` of tensors and plain data (the learner's state, the offsets it covers, ...). It is
written to a temporary file, fsynced, then renamed, so a crash leaves either the old or the new
file, never half of one. Loading checks the checksum before ``torch.load(weights_only=True)``,
so a truncated or corrupted file is detected (and the one before it used) rather than half read,
and a file of another format version is refused with a message, never guessed at.

The store is a directory or a bucket (``connectors.blob_store``). A single daemon holds an
exclusive ``flock`` on its directory's ``.lock`` (which names the holder's pid), so a second
daemon pointed at the same directory refuses to start instead of interleaving its checkpoints
with the first one's. Trainers with standbys share a store without the lock: each checkpoint
number is created once (a conditional write), and ``hle_stream.service.trainer_lease`` fences a
trainer that lost its turn. The store deletes only files of its own naming
(``checkpoint-NNNNNNNNN.pt`` and their temporary files).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import torch

from connectors.blob_store import BlobStore, DirectoryBlobStore

log = logging.getLogger(__name__)
PREFIX = "checkpoint-"
_OWN_NAME = re.compile(rf"{PREFIX}\d{{9}}\.pt")
_STALE_TMP = re.compile(rf"{PREFIX}\d{{9}}(\.pt\.\d+)?\.tmp")  # DirectoryBlobStore's temporary names
MAGIC = b"HLECKPT"
FORMAT_VERSION = 2  # 1: a bare torch.save file (before checksums)


class IncompatibleCheckpointError(RuntimeError):
    """A checkpoint written by a format this version cannot read."""


class CheckpointDirLockedError(RuntimeError):
    """Another process holds the checkpoint directory."""


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint the OS will not let us read (permissions, I/O error): not corrupt, so not skipped."""


class CheckpointNumberTaken(OSError):
    """Another writer stored the checkpoint number this one was about to write."""


class CorruptCheckpointError(ValueError):
    """A checkpoint whose header or checksum does not match its content."""


@dataclass
class LoadReport:
    """What ``load_latest`` found: the file used and the newer ones it had to skip (quarantined)."""

    path: PurePath | None = None
    corrupt: list[PurePath] = field(default_factory=list)


def encode(state: dict[str, Any]) -> bytes:
    payload = io.BytesIO()
    torch.save(state, payload)
    data = payload.getvalue()
    return b"%s %d %s\n" % (MAGIC, FORMAT_VERSION, hashlib.sha256(data).hexdigest().encode()) + data


def decode(blob: bytes, name: str = "checkpoint") -> dict[str, Any]:
    header, _, data = blob.partition(b"\n")
    parts = header.split(b" ")
    if len(parts) != 3 or parts[0] != MAGIC:
        if blob.startswith(b"PK"):  # a bare torch.save zip: format 1
            raise IncompatibleCheckpointError(
                f"{name} has format 1 (no checksum); this hle-stream reads format {FORMAT_VERSION}. "
                "Start from an empty --checkpoint-dir (the model retrains from the topic's retained events).")
        raise CorruptCheckpointError(f"{name} has no hle-stream checkpoint header")
    try:
        version = int(parts[1])
    except ValueError:
        raise CorruptCheckpointError(f"{name} has an unreadable format version {parts[1]!r}") from None
    if version != FORMAT_VERSION:
        raise IncompatibleCheckpointError(
            f"{name} has format {version}; this hle-stream reads format {FORMAT_VERSION}. Use the hle-stream "
            "version that wrote it, or start from an empty --checkpoint-dir.")
    if hashlib.sha256(data).hexdigest().encode() != parts[2]:
        raise CorruptCheckpointError(f"{name} fails its checksum (truncated or corrupted)")
    return torch.load(io.BytesIO(data), weights_only=True)


class CheckpointStore:
    """The checkpoints of one model in a ``BlobStore`` (a directory by default), the newest ``keep``.

    ``exclusive`` (a single daemon): the directory is locked for the store's lifetime. Without it
    (a trainer with standbys, ``hle_stream.service.trainer_lease``), writers are told apart by
    the store's conditional writes instead: a checkpoint number is written once, never replaced.
    """

    def __init__(self, location: Path | BlobStore, keep: int = 3, exclusive: bool = True) -> None:
        self.blobs = location if not isinstance(location, (str, Path)) else DirectoryBlobStore(Path(location))
        self.keep = keep
        self.last_size = 0  # bytes of the last checkpoint saved
        self._lock = None
        if exclusive and isinstance(self.blobs, DirectoryBlobStore):
            self._lock = _lock_directory(self.blobs.directory)
            for stale in self.blobs.keys(PREFIX):  # a write a crash interrupted (the lock says no one else writes)
                if _STALE_TMP.fullmatch(stale):
                    self.blobs.delete(stale)

    def _own(self) -> list[str]:
        return [key for key in self.blobs.keys(PREFIX) if _OWN_NAME.fullmatch(key)]

    def files(self) -> list[PurePath]:
        return [self.blobs.location(key) for key in self._own()]

    def quarantined(self) -> list[PurePath]:
        """Checkpoints found unusable by an earlier load (renamed ``*.corrupt``)."""
        return [self.blobs.location(key) for key in self.blobs.keys(PREFIX) if key.endswith(".corrupt")]

    def close(self) -> None:
        """Release the directory and remove its lock file (the OS releases the lock too when the
        process dies; the file then stays, harmless)."""
        if self._lock is not None:
            Path(self._lock.name).unlink(missing_ok=True)  # still held: whoever opens it next gets a new file
            self._lock.close()
            self._lock = None

    def save(self, state: dict[str, Any]) -> PurePath:
        """Write the next checkpoint; an ``OSError`` (disk full, a store that is away) leaves the
        previous ones as they were. ``CheckpointNumberTaken``: another writer wrote that number
        first (a stale trainer racing a new one)."""
        own = self._own()
        number = int(own[-1].removeprefix(PREFIX).removesuffix(".pt")) + 1 if own else 1
        key = f"{PREFIX}{number:09d}.pt"
        blob = encode(state)
        if not self.blobs.put_new(key, blob):
            raise CheckpointNumberTaken(f"{self.blobs.location(key)} was written by another trainer")
        self.last_size = len(blob)
        for old in self._own()[: -self.keep]:
            self.blobs.delete(old)
        return self.blobs.location(key)

    def load(self, key: str) -> tuple[dict[str, Any], LoadReport]:
        """One named checkpoint (a rollback's); raises if it is missing or does not pass its checks."""
        blob = self.blobs.get(key)
        if blob is None:
            raise UnreadableCheckpointError(f"{self.blobs.location(key)} is gone (rotated out, or moved away)")
        return decode(blob, key), LoadReport(path=self.blobs.location(key))

    def load_latest(self) -> tuple[dict[str, Any] | None, LoadReport]:
        """The newest checkpoint that passes its checks (``None`` when there is none), and a report
        of the corrupt files skipped. An incompatible version raises: falling back to an older
        file would silently lose the newer training."""
        report = LoadReport()
        for key in reversed(self._own()):
            path = self.blobs.location(key)
            try:
                blob = self.blobs.get(key)
            except OSError as err:
                raise UnreadableCheckpointError(f"cannot read {path}: {err.strerror or err}; fix its permissions or "
                                                "storage, or move it away to start from the one before") from None
            if blob is None:  # deleted by the writer since the listing (an older one, rotated out)
                continue
            try:
                state = decode(blob, key)
            except IncompatibleCheckpointError:
                raise
            except Exception as err:  # corrupt, truncated or unreadable: fall back to the one before
                quarantined = key.removesuffix(".pt") + ".corrupt"
                self.blobs.rename(key, quarantined)  # kept for inspection, never loaded or counted again
                log.error("checkpoint %s is unusable (%s); moved to %s, trying the previous one", key, err,
                          quarantined)
                report.corrupt.append(self.blobs.location(quarantined))
                continue
            report.path = path
            return state, report
        return None, report

    def read_record(self, key: str) -> dict[str, Any] | None:
        """A small JSON record kept beside the checkpoints (``None``: absent or unreadable)."""
        try:
            blob = self.blobs.get(key)
            return json.loads(blob) if blob is not None else None
        except (OSError, ValueError):
            return None

    def write_record(self, key: str, record: dict[str, Any]) -> None:
        self.blobs.put(key, json.dumps(record).encode())


def _lock_directory(directory: Path):
    """An exclusive, non-blocking ``flock`` on ``directory/.lock``, held while the file stays open.
    The holder removes the file when it closes the store (``CheckpointStore.close``), so a lock
    taken on a file that was just removed is let go and taken again on the new one."""
    path = directory / ".lock"
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise CheckpointDirLockedError(f"the checkpoint directory {directory} is in use by another hle-stream "
                                           f"(pid {holder}); give each daemon its own --checkpoint-dir") from None
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
