"""The daemon's own record of the event ids its model has learned from, kept in step with checkpoints.

Ids given to the learner are held in memory and appended (fsynced) just before each checkpoint,
which stores the log's length. A restart truncates the log to the length its checkpoint stored,
dropping ids learned after that checkpoint: the model that resumes never saw them, and they will
be consumed and learned again. So the log always lists exactly the events in the lineage of the
current model, each once, and a fault-injection run can compare it with what was produced.

The format is JSON lines: a header (``{"trained_ids_log": 1, "log_id": ...}``), then one JSON
string per id, so any id (a newline, a quote, any separator in it) is one line and reads back as
itself (``read_ids``). The header's ``log_id`` names the file: trainers sharing a model store
must share one log (``hle_stream.service.daemon`` checks it against the store's record at start).

Opt-in (``--trained-ids-log``): it grows by one line per labelled event.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Iterable

FORMAT = 1


class LineageMismatchError(RuntimeError):
    """The log cannot be the record of this model (written by an older version, or shorter than
    what the checkpoint covers)."""


class TrainedIdLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log_id = self._open()
        self._pending: list[str] = []
        self._length = self._count_ids()

    def _open(self) -> str:
        """The log's id: read from its header, or a new one written as a new (or empty) log's header."""
        self.path.touch()
        with open(self.path, "rb") as f:
            first = f.readline()
        if not first:
            log_id = uuid.uuid4().hex
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"trained_ids_log": FORMAT, "log_id": log_id}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return log_id
        try:
            header = json.loads(first)
            if isinstance(header, dict) and header.get("trained_ids_log") == FORMAT:
                return str(header["log_id"])
        except ValueError:
            pass
        raise LineageMismatchError(f"{self.path} is not a trained-ids log of this version (a header, then one JSON "
                                   "string per line): move it away and a new one is started")

    def _count_ids(self) -> int:
        with open(self.path, "rb") as f:
            return sum(1 for _ in f) - 1

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
                    f.write("".join(json.dumps(event_id, ensure_ascii=False) + "\n" for event_id in self._pending))
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
            header, *lines = f.readlines()
        if len(lines) < length:
            raise LineageMismatchError(f"{self.path} holds {len(lines)} ids but the checkpoint covers {length}: "
                                       "it is not this model's log (give every trainer of a model store the same "
                                       "--trained-ids-log, on shared storage)")
        if len(lines) > length:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(header + b"".join(lines[:length]))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        self._length = length
        return len(lines) - length


def read_ids(path: Path) -> list[str]:
    """The ids a trained-ids log holds, in order (none when it does not exist yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in list(f)[1:] if line.endswith("\n")]
    except FileNotFoundError:
        return []
