"""The daemon's own record of the event ids its model has learned from, kept in step with checkpoints.

Ids given to the learner are held in memory and appended (fsynced) just before each checkpoint,
which stores the log's length. A restart truncates the log to the length its checkpoint stored,
dropping ids learned after that checkpoint: the model that resumes never saw them, and they will
be consumed and learned again. So the log always lists exactly the events in the lineage of the
current model, each once, and a fault-injection run can compare it with what was produced.

Opt-in (``--trained-ids-log``): it grows by one line per labelled event.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


class TrainedIdLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._pending: list[str] = []
        self._length = self._count_lines()

    def _count_lines(self) -> int:
        with open(self.path, "rb") as f:
            return sum(1 for _ in f)

    def record(self, ids: Iterable[str]) -> None:
        self._pending.extend(ids)

    def discard_pending(self) -> None:
        """Forget the ids recorded since the last commit (a trainer that lost its turn: the model
        that learned them is discarded)."""
        self._pending.clear()

    def commit(self) -> int:
        """Append the ids recorded since the last commit, durably; returns the log's length."""
        if self._pending:
            size = self.path.stat().st_size
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write("".join(f"{event_id}\n" for event_id in self._pending))
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:  # disk full: no half-written tail, the ids stay pending for the next try
                os.truncate(self.path, size)
                raise
            self._length += len(self._pending)
            self._pending.clear()
        return self._length

    def truncate_to(self, length: int) -> int:
        """Keep the first ``length`` ids (what the restored checkpoint covers); returns how many
        were dropped."""
        self._pending.clear()
        with open(self.path, "rb") as f:
            lines = f.readlines()
        if len(lines) < length:
            raise RuntimeError(f"{self.path} holds {len(lines)} ids but the checkpoint covers {length}: "
                               "the log does not belong to this checkpoint directory")
        if len(lines) > length:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(b"".join(lines[:length]))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        self._length = length
        return len(lines) - length
