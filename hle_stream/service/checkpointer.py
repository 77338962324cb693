"""The daemon's checkpoint protocol: deliver → record the lineage → save → commit, and restore.

Offsets are committed only after the checkpoint that covers them is on disk, and a restart
resumes from the offsets stored in the checkpoint, so the model's lineage trains each event
once; predictions between the last checkpoint and a crash are sent again (at-least-once output,
``id`` is the dedupe key). A checkpoint is written only once every prediction and dead letter
before it is acknowledged, so output is never lost either. A crash between any two steps leaves
the previous checkpoint in charge.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import PurePath
from typing import Any, Callable

from connectors.ports import DeliveringSink, Source, SourceUnavailable
from hle_stream.service.checkpoint import CheckpointNumberTaken, CheckpointStore
from hle_stream.service.lineage import LineageMismatchError
from hle_stream.service.processing import MicroBatchProcessor
from hle_stream.service.telemetry import NO_TELEMETRY, NoTelemetry, Telemetry
from hle_stream.service.trainer_lease import TrainerLease

log = logging.getLogger(__name__)

STATE_KEYS = ("learner", "prequential", "topic", "offsets")
COMMITS_FILE = "committed-offsets.json"


class CheckpointMismatchError(RuntimeError):
    """The checkpoint directory belongs to another input topic, or holds a foreign structure."""


class Checkpointer:
    """Owns the checkpoint store (a directory's lock included) for one processor reading one topic.

    ``healthy`` is False after a failed write until the next good one; ``model_finite`` is False
    once a checkpoint was refused because the weights are not finite. ``own_commits`` holds the
    offsets this model's lineage committed last, kept in ``COMMITS_FILE`` beside the checkpoints:
    a group offset ahead of a restored checkpoint is then known to be this model's own (its newer
    checkpoint was lost) or another member's (``hle_stream.service.offsets``). With a ``lease``
    (a trainer with standbys), nothing is written or committed unless the lease still holds.
    """

    def __init__(self, store: CheckpointStore, processor: MicroBatchProcessor, topic: str,
                 telemetry: Telemetry | NoTelemetry = NO_TELEMETRY, lease: TrainerLease | None = None) -> None:
        self.store = store
        self.where = store.blobs.url
        self.processor = processor
        self.topic = topic
        self.telemetry = telemetry
        self.lease = lease
        self.healthy = True
        self.model_finite = True
        self.own_commits: dict[int, int] = {}
        self.fenced = False  # the last write was refused: the store names a newer trainer
        self.input_identity: dict | None = None  # where the offsets are valid now (connectors.topics.topic_identity)
        self.restored_identity: dict | None = None  # where the restored checkpoint's offsets were valid
        self.lost_every_checkpoint = False  # the last restore found checkpoints, none of them usable
        # a rolled-back model: the group's offsets of a partition its checkpoint does not cover are a
        # newer model's, so such a partition is read from its first event
        self.uncovered_from_earliest = False

    def may_write(self, source: Source) -> bool:
        """False when this trainer has lost its turn (fenced): nothing to write, nothing to commit;
        it is then neither active nor ready until the group makes it a standby or the active one."""
        if self.lease is None or self.lease.holds(source.generation()):
            self.fenced = False
            return True
        log.warning("fenced: this trainer no longer holds the group's newest generation; no checkpoint, no commit")
        self.fenced = True
        self.telemetry.record_fenced()
        self.telemetry.record_trainer_active(False)
        return False

    def checkpoint_and_commit(self, sink: DeliveringSink, source: Source, stopping: Callable[[], bool],
                              waiting: Callable[[], None]) -> bool:
        """Every output acknowledged → trained ids appended → checkpoint on disk → the held
        partitions' offsets committed. False (and nothing committed) when the checkpoint could not
        be written: the caller retries later. Raises ``DeliveryAborted`` when stopped while
        output is undelivered."""
        sink.deliver_all(stopping, waiting)
        learner = self.processor.learner
        if learner is not None and not learner.finite():
            self.model_finite = False
            log.error("the model's weights are not finite: checkpoint refused (the last good one stands); "
                      "restart the daemon to resume from it")
            return False
        if not self.may_write(source):
            return False
        started = time.perf_counter()
        try:
            path = self.store.save(self._state())
        except CheckpointNumberTaken as err:  # a newer trainer wrote first: this one is stale
            log.warning("fenced: %s; no commit", err)
            return False
        except OSError as err:
            self.healthy = False
            log.error("checkpoint write failed in %s: %s; nothing committed, retrying later (not ready meanwhile)",
                      self.where, err.strerror or err)
            self.telemetry.record_checkpoint_failure()
            return False
        self.healthy = True
        seconds = time.perf_counter() - started
        self.telemetry.record_checkpoint(seconds, self.store.last_size)
        if not self.may_write(source):  # lost the turn while writing: the new trainer's offsets rule
            return False
        held = source.assignment()  # a revoked partition's offset is not ours to move
        offsets = {p: o for p, o in self.processor.next_offsets.items() if p in held}
        try:
            source.commit(offsets)
        except SourceUnavailable as err:  # the checkpoint's offsets rule on restart; the next commit catches up
            log.warning("offset commit failed after checkpoint %s: %s", path.name, err)
            return True
        self._record_commit(offsets)
        log.info("checkpoint %s (%.2f s) covers offsets %s; committed %s", path.name, seconds,
                 self.processor.next_offsets, offsets)
        return True

    def _record_commit(self, offsets: dict[int, int]) -> None:
        """Remember what this lineage committed (atomically replaced; a failure only costs the
        distinction the record makes, logged)."""
        self.own_commits.update(offsets)
        record = {"model_id": self.processor.model_id, "offsets": {str(p): o for p, o in self.own_commits.items()}}
        try:
            self.store.write_record(COMMITS_FILE, record)
        except OSError as err:
            log.warning("cannot record the committed offsets in %s: %s", self.where, err.strerror or err)

    def _read_commits(self) -> dict[int, int]:
        record = self.store.read_record(COMMITS_FILE)
        try:
            if record is None or record.get("model_id") != self.processor.model_id:
                return {}  # none, or another lineage's commits (a store reused for a new model)
            return {int(p): int(o) for p, o in record["offsets"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}

    def _state(self) -> dict[str, Any]:
        state = self.processor.state_dict()
        state["topic"] = self.topic
        lineage = self.processor.lineage
        state["trained_ids"] = lineage.commit() if lineage is not None else None
        state["input_identity"] = self.input_identity
        state["uncovered_from_earliest"] = self.uncovered_from_earliest
        state["writer"] = {"host": socket.gethostname(), "pid": os.getpid(),  # which trainer wrote it, for operators
                           "generation": self.lease.generation if self.lease is not None else None,
                           "written_at": time.time()}
        return state

    def restore(self, fresh_start_allowed: bool = False, key: str | None = None) -> None:
        """Load the newest usable checkpoint into the processor (none: a fresh start). Raises
        ``CheckpointMismatchError`` for a checkpoint of another topic or of a foreign structure, and
        when every checkpoint is unusable unless ``fresh_start_allowed`` (then ``lost_every_checkpoint``:
        the caller reads the topic from an end it chose, not from the group's offsets, whose events
        are in no model now). ``key``: that checkpoint, not the newest (a rollback's)."""
        state, report = self.store.load(key) if key is not None else self.store.load_latest()
        if report.corrupt:
            self.telemetry.record_corrupt_checkpoints(len(report.corrupt))
        # unusable ones found now, or by a start that was refused (they were moved aside then)
        unusable = (report.corrupt or self.store.quarantined()) if state is None else []
        self.restored_identity, self.lost_every_checkpoint = None, bool(unusable)
        self.uncovered_from_earliest = bool(state.get("uncovered_from_earliest")) if state is not None else False
        if unusable and not fresh_start_allowed:
            raise CheckpointMismatchError(
                f"every checkpoint in {self.where} is unusable ({', '.join(sorted(p.name for p in unusable))}): "
                "--reset-offsets earliest starts a new model from the topic's earliest offset (latest: from its "
                "end), or move them away")
        if report.corrupt:
            log.error("recovered from %d unusable checkpoint(s) %s: resuming from %s", len(report.corrupt),
                      [p.name for p in report.corrupt], report.path.name if report.path else "nothing (a new model)")
        lineage = self.processor.lineage
        if state is None:
            log.info("no checkpoint in %s: starting fresh", self.where)
            if lineage is not None:
                lineage.truncate_to(0)
            return
        _check_structure(state, report.path)
        if state["topic"] != self.topic:
            raise CheckpointMismatchError(f"the checkpoint in {self.where} is for topic {state['topic']!r}, "
                                          f"not {self.topic!r}; point --checkpoint-dir elsewhere")
        conflicts = self.processor.settings_conflicts(state)
        if conflicts:
            changes = ", ".join(f"{name} {saved!r} (this run: {requested!r})"
                                for name, (saved, requested) in conflicts.items())
            raise CheckpointMismatchError(f"the checkpoint in {self.where} holds a model trained with {changes}; "
                                          "these settings are fixed once a model exists: run with the checkpoint's, "
                                          "or use an empty --checkpoint-dir for a new model")
        try:
            self.processor.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointMismatchError(f"{report.path} passes its checksum but its content does not load "
                                          f"({type(err).__name__}: {err}); move it away to start from the one "
                                          "before, or use an empty --checkpoint-dir") from None
        if lineage is not None and state.get("trained_ids") is not None:
            try:
                dropped = lineage.truncate_to(state["trained_ids"])
            except LineageMismatchError as err:
                raise CheckpointMismatchError(str(err)) from None
            log.info("trained-ids log: %d ids after the checkpoint dropped (they will be learned again)", dropped)
        self.own_commits = self._read_commits()
        self.restored_identity = state.get("input_identity")  # absent before identities were recorded
        log.info("restored checkpoint %s: offsets %s", report.path.name, self.processor.next_offsets)

    def close(self) -> None:
        self.store.close()


def _check_structure(state: Any, path: PurePath | None) -> None:
    """A checkpoint that passes its checksum but is not a daemon checkpoint (written by another
    tool into this directory) is refused by name, not half-loaded."""
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS) or \
            not isinstance(state["offsets"], dict):
        raise CheckpointMismatchError(f"{path} is not an hle-stream daemon checkpoint (expected the keys "
                                      f"{', '.join(STATE_KEYS)}); move it away or use an empty --checkpoint-dir")
