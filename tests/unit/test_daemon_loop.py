"""The daemon's loop on the in-memory source and sink (no broker, milliseconds): ordering, dead
letters, checkpoint then commit, restart from a checkpoint, and rebalances (a partition revoked,
then handed back with the group's offset behind or ahead of the model's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from connectors.memory import ListSink, MemorySource
from hle_stream.core.config import LearnerConfig
from hle_stream.service.checkpoint import decode
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Daemon
from hle_stream.service.lineage import read_ids
from hle_stream.service.offsets import resume_offsets

TOPIC = "events"
LABELS = ["a", "b", "a/x", "b/y"]


def _value(partition: int, i: int, label: bool = True) -> bytes:
    event = {"id": f"p{partition}-{i}", "x": [float((i * 7 + k + partition) % 5) for k in range(4)]}
    if label:
        event["label"] = LABELS[i % len(LABELS)]
    return json.dumps(event).encode()


def _topic(partitions: int, per_partition: int) -> list[list[bytes | None]]:
    return [[_value(p, i) for i in range(per_partition)] for p in range(partitions)]


class ScriptedSource(MemorySource):
    """A member of a group whose assignment changes at given polls (a rebalance script); it stops
    the daemon once the script is done and nothing is left to read. Each commit is checked
    against the newest checkpoint on disk: it must already cover what is committed."""

    def __init__(self, partitions, committed, resume, checkpoint_dir: Path,
                 script: dict[int, Callable[["ScriptedSource"], None]] | None = None) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.script = dict(script or {})
        self.polls = 0
        self.stop: Callable[[], None] = lambda: None
        self.committed_history: list[dict[int, int]] = []
        super().__init__(TOPIC, partitions, committed, resume)

    def poll(self, max_records, timeout_s=0.0):
        self.polls += 1
        if self.polls in self.script:
            self.script.pop(self.polls)(self)
        records = super().poll(max_records, timeout_s)
        if not records and not self.script:
            self.stop()
        return records

    def commit(self, offsets):
        newest = sorted(self.checkpoint_dir.glob("*.pt"))[-1]
        covered = decode(newest.read_bytes())["offsets"]
        assert all(covered[p] >= o for p, o in offsets.items()), (covered, offsets)
        super().commit(offsets)
        self.committed_history.append(dict(self.committed))


def _run(tmp_path: Path, partitions, committed: dict[int, int], script=None,
         **changes) -> tuple[Daemon, ScriptedSource, ListSink]:
    """One daemon run over ``partitions`` until the script is done and everything is read."""
    sink, opened = ListSink(), []

    def connect(resume, on_dropped):
        source = ScriptedSource(partitions, committed, resume, tmp_path / "checkpoints", script)
        source.stop = daemon.request_stop
        opened.append(source)
        return source, sink

    settings = dict(input_topic=TOPIC, checkpoint_dir=tmp_path / "checkpoints", checkpoint_every_events=16,
                    max_batch=8, http_port=None, metrics=False, trained_ids_log=tmp_path / "trained.log",
                    processing=ProcessingConfig(learner_config=LearnerConfig(memory_size=16, batch_size=4,
                                                                             device="cpu")))
    config = DaemonConfig(**{**settings, **changes})
    daemon = Daemon(config, connect)
    daemon.run()
    return daemon, opened[0], sink


def _trained(tmp_path) -> list[str]:
    return read_ids(tmp_path / "trained.log")


def _never_backwards(history: list[dict[int, int]]) -> bool:
    return all(later.get(p, 0) >= o for earlier, later in zip(history, history[1:]) for p, o in earlier.items())


def test_a_poison_record_is_dead_lettered_with_its_offset_and_the_stream_goes_on(tmp_path):
    topic = _topic(1, 40)
    topic[0][5] = b"\xff{not json"
    topic[0][6] = None  # a tombstone
    daemon, source, sink = _run(tmp_path, topic, {})
    assert [(r.partition, r.offset, reason) for r, reason, _ in sink.dead_letters] == [
        (0, 5, "not_json"), (0, 6, "not_json")]
    assert [d["id"] for d in sink.predictions] == [f"p0-{i}" for i in range(40) if i not in (5, 6)]  # in order
    assert source.committed == {0: 40}  # past the poison: a restart does not meet it again
    assert len(_trained(tmp_path)) == 38


def test_offsets_are_committed_only_after_a_checkpoint_covers_them(tmp_path):
    daemon, source, _ = _run(tmp_path, _topic(2, 30), {})
    assert len(source.commits) >= 3  # every 16 events, and at the stop; ScriptedSource.commit checks each
    assert source.committed == {0: 30, 1: 30}


def test_a_restart_resumes_from_the_checkpoint_and_trains_nothing_twice(tmp_path):
    topic, committed = _topic(1, 50), {}
    _run(tmp_path, [topic[0][:30]], committed)  # the first run sees 30 events, checkpoints and stops
    assert committed == {0: 30}
    committed[0] = 10  # the group's offset is behind the model (a lost commit)
    _, source, sink = _run(tmp_path, topic, committed)
    assert [d["id"] for d in sink.predictions] == [f"p0-{i}" for i in range(30, 50)]  # the checkpoint rules
    trained = _trained(tmp_path)
    assert len(trained) == len(set(trained)) == 50


def test_a_revoked_partition_is_never_committed_and_resumes_where_the_model_left_it(tmp_path):
    """Revoked mid-stream, nobody reads it meanwhile (the other member leaves without
    committing), then handed back: no event lost or trained twice, no offset moved back."""
    script = {3: lambda s: s.revoke({1}), 12: lambda s: s.assign({1})}
    _, source, sink = _run(tmp_path, _topic(2, 40), {1: 0}, script)
    trained = _trained(tmp_path)
    assert len(trained) == len(set(trained)) == 80
    assert sorted(d["id"] for d in sink.predictions) == sorted(f"p{p}-{i}" for p in (0, 1) for i in range(40))
    assert _never_backwards(source.committed_history)
    assert source.committed == {0: 40, 1: 40}


@pytest.mark.parametrize("partition_1_length", [40, 30])
def test_a_partition_handed_back_after_another_member_committed_resumes_at_the_group_offset(tmp_path,
                                                                                          partition_1_length):
    """Meanwhile another member read partition 1 up to offset 30 and committed it: the daemon
    goes on from there, and the group's offset never moves back (also when nothing follows 30)."""
    def other_member_reads(source):
        source.committed[1] = 30
        source.committed_history.append(dict(source.committed))

    topic = _topic(2, 40)
    topic[1] = topic[1][:partition_1_length]
    script = {2: lambda s: s.revoke({1}), 4: other_member_reads, 6: lambda s: s.assign({1})}
    _, source, sink = _run(tmp_path, topic, {}, script)
    answered = [d["id"] for d in sink.predictions]
    own = [int(i.removeprefix("p1-")) for i in answered if i.startswith("p1-")]
    before_revoke = [i for i in own if i < 30]
    assert before_revoke == list(range(len(before_revoke))) and len(before_revoke) < 30  # then the other member's
    assert [i for i in own if i >= 30] == list(range(30, partition_1_length))
    assert len(answered) == len(set(answered))
    assert _never_backwards(source.committed_history)
    assert source.committed == {0: 40, 1: partition_1_length}


def test_a_daemon_on_part_of_the_topic_says_so(tmp_path, caplog):
    script = {2: lambda s: s.revoke({1}), 30: lambda s: s.assign({1})}
    _run(tmp_path, _topic(2, 20), {}, script)
    assert "holds only partitions [0] of the 2" in caplog.text


def test_a_restored_older_checkpoint_learns_again_what_its_lost_successor_had_committed(tmp_path):
    """The newest checkpoint is lost (corrupt) after its commit: the older one restored resumes at
    its own offset, although the group's (signed by this model) is ahead, and learns those
    events again; nothing is lost."""
    committed: dict[int, int] = {}
    topic = _topic(1, 48)
    _run(tmp_path, [topic[0][:16]], committed, checkpoint_every_events=8)  # checkpoints at 8 and 16
    for path in (tmp_path / "checkpoints").glob("*.pt"):  # the ones at 16 fail their checksum: the one at 8 is used
        if decode(path.read_bytes())["offsets"][0] == 16:
            path.write_bytes(path.read_bytes()[:-5] + b"XXXXX")
    assert committed == {0: 16}
    _, source, sink = _run(tmp_path, topic, committed)
    assert [d["id"] for d in sink.predictions] == [f"p0-{i}" for i in range(8, 48)]
    assert sorted(set(_trained(tmp_path)), key=lambda i: int(i.split("-")[1])) == [f"p0-{i}" for i in range(48)]


@pytest.mark.parametrize(("checkpointed", "committed", "own_commits", "expected"), [
    ({}, {0: None}, {}, {}),  # neither knows: the earliest (the source's reset policy)
    ({}, {0: 7}, {}, {0: 7}),  # only the group: its offset
    ({0: 12}, {0: None}, {}, {0: 12}),  # only the checkpoint: the checkpoint
    ({0: 12}, {0: 7}, {0: 7}, {0: 12}),  # the model is ahead (learned past its last commit)
    ({0: 12}, {0: 20}, {0: 12}, {0: 20}),  # another member committed past the model: the group
    ({0: 12}, {0: 20}, {0: 20}, {0: 12}),  # this lineage's own later commit, its checkpoint lost
    ({0: 12, 1: 3}, {1: 5}, {}, {1: 5}),  # only the partitions just assigned are answered for
])
def test_the_resume_rule(checkpointed, committed, own_commits, expected):
    assert resume_offsets(checkpointed, committed, own_commits) == expected
