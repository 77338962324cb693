"""Checkpoints on disk: written atomically, checksummed, loaded without running code, the last K kept.

A file is one header line, ``HLECKPT <format version> <sha256 of the payload>``, then the payload:
a ``torch.save`` of tensors and plain data (the learner's state, the offsets it covers, ...). It is
written to a temporary file, fsynced, then renamed, so a crash leaves either the old or the new
file, never half of one. Loading checks the checksum before ``torch.load(weights_only=True)``,
so a truncated or corrupted file is detected (and the one before it used) rather than half read,
and a file of another format version is refused with a message, never guessed at.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
PREFIX = "checkpoint-"
MAGIC = b"HLECKPT"
FORMAT_VERSION = 2  # 1: a bare torch.save file (before checksums)


class IncompatibleCheckpointError(RuntimeError):
    """A checkpoint written by a format this version cannot read."""


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
        for stale in self.directory.glob(f"{PREFIX}*.tmp"):  # a write a crash interrupted
            stale.unlink()

    def files(self) -> list[Path]:
        return sorted(self.directory.glob(f"{PREFIX}*.pt"))

    def save(self, state: dict[str, Any]) -> Path:
        files = self.files()
        number = int(files[-1].stem.removeprefix(PREFIX)) + 1 if files else 1
        target = self.directory / f"{PREFIX}{number:09d}.pt"
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(encode(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
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
                state = decode(path.read_bytes(), path.name)
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
