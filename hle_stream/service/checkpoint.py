"""Checkpoints on disk: written atomically, checksummed, loaded without running code, the last K kept.

A file is one header line, ``HLECKPT <format version> <sha256 of the payload>``, then the payload:
a ``torch.save`` of tensors and plain data (the learner's state, the offsets it covers, ...). It is
written to a temporary file, fsynced, then renamed, so a crash leaves either the old or the new
file, never half of one. Loading checks the checksum before ``torch.load(weights_only=True)``,
so a truncated or corrupted file is detected (and the one before it used) rather than half read,
and a file of another format version is refused with a message, never guessed at.

One writer per directory: the store holds an exclusive ``flock`` on ``.lock`` (which names the
holder's pid) for its lifetime, so a second daemon pointed at the same directory refuses to
start instead of interleaving its checkpoints with the first one's. The store deletes only
files of its own naming (``checkpoint-NNNNNNNNN.pt`` and their ``.tmp``), and only under the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
PREFIX = "checkpoint-"
_OWN_NAME = re.compile(rf"{PREFIX}\d{{9}}\.(pt|tmp)")
MAGIC = b"HLECKPT"
FORMAT_VERSION = 2  # 1: a bare torch.save file (before checksums)


class IncompatibleCheckpointError(RuntimeError):
    """A checkpoint written by a format this version cannot read."""


class CheckpointDirLockedError(RuntimeError):
    """Another process holds the checkpoint directory."""


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint the OS will not let us read (permissions, I/O error): not corrupt, so not skipped."""


class CorruptCheckpointError(ValueError):
    """A checkpoint whose header or checksum does not match its content."""


@dataclass
class LoadReport:
    """What ``load_latest`` found: the file used and the newer ones it had to skip (quarantined)."""

    path: Path | None = None
    corrupt: list[Path] = field(default_factory=list)


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
    def __init__(self, directory: Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_directory(self.directory)
        for stale in self._own(".tmp"):  # a write a crash interrupted (the lock says no one else writes)
            stale.unlink()

    def _own(self, suffix: str) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"{PREFIX}*{suffix}") if _OWN_NAME.fullmatch(p.name))

    def files(self) -> list[Path]:
        return self._own(".pt")

    def close(self) -> None:
        """Release the directory (the OS releases it too when the process dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def save(self, state: dict[str, Any]) -> Path:
        """Write the next checkpoint; an ``OSError`` (disk full, no descriptors) leaves the previous
        ones as they were and no temporary file behind."""
        files = self.files()
        number = int(files[-1].stem.removeprefix(PREFIX)) + 1 if files else 1
        target = self.directory / f"{PREFIX}{number:09d}.pt"
        tmp = target.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(encode(state))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        for old in self.files()[: -self.keep]:
            old.unlink()
        return target

    def load_latest(self) -> tuple[dict[str, Any] | None, LoadReport]:
        """The newest checkpoint that passes its checks (``None`` when there is none), and a report
        of the corrupt files skipped. An incompatible version raises: falling back to an older
        file would silently lose the newer training."""
        report = LoadReport()
        for path in reversed(self.files()):
            try:
                blob = path.read_bytes()
            except OSError as err:
                raise UnreadableCheckpointError(f"cannot read {path}: {err.strerror}; fix its permissions or "
                                                "storage, or move it away to start from the one before") from None
            try:
                state = decode(blob, path.name)
            except IncompatibleCheckpointError:
                raise
            except Exception as err:  # corrupt, truncated or unreadable: fall back to the one before
                quarantined = path.with_suffix(".corrupt")
                path.rename(quarantined)  # kept for inspection, never loaded or counted again
                log.error("checkpoint %s is unusable (%s); moved to %s, trying the previous one", path.name, err,
                          quarantined.name)
                report.corrupt.append(quarantined)
                continue
            report.path = path
            return state, report
        return None, report


def _lock_directory(directory: Path):
    """An exclusive, non-blocking ``flock`` on ``directory/.lock``, held while the file stays open."""
    handle = open(directory / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise CheckpointDirLockedError(f"the checkpoint directory {directory} is in use by another hle-stream "
                                       f"(pid {holder}); give each daemon its own --checkpoint-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
