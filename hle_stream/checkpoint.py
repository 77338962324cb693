"""Checkpoints on disk: written atomically, loaded without running code, the last K kept.

A checkpoint is one ``torch.save`` file of tensors and plain data (the learner's state and the
input offsets it covers). It is written to a temporary file, fsynced, then renamed, so a crash
leaves either the old or the new file, never half of one. Loading uses ``weights_only=True``;
a file that fails to load is reported and the one before it is used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
PREFIX = "checkpoint-"


class CheckpointStore:
    def __init__(self, directory: Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob(f"{PREFIX}*.pt"))

    def save(self, state: dict[str, Any]) -> Path:
        files = self._files()
        number = int(files[-1].stem.removeprefix(PREFIX)) + 1 if files else 1
        target = self.directory / f"{PREFIX}{number:09d}.pt"
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        for old in self._files()[: -self.keep]:
            old.unlink()
        return target

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads, or ``None`` when there is none."""
        for path in reversed(self._files()):
            try:
                return torch.load(path, weights_only=True)
            except Exception as err:  # a corrupt or truncated file: fall back to the one before
                log.error("checkpoint %s is unreadable (%s); trying the previous one", path, err)
        return None
