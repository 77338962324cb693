"""``hle-stream model``: the versions in a model store, and a rollback a running trainer adopts
(the in-memory source: no broker). The fleet's end-to-end rollback is in
``tests/integration/test_fleet.py``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from connectors.blob_store import DirectoryBlobStore
from connectors.memory import ListSink, MemorySource
from hle_stream.core.config import LearnerConfig
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Daemon
from hle_stream.service.lineage import read_ids
from hle_stream.service.model_history import history, rollback, versions
from hle_stream.service.snapshots import newest_snapshot_marker

LABELS = ["a", "b", "a/x", "b/y"]


def _values(start: int, count: int) -> list[bytes]:
    return [json.dumps({"id": f"e{i}", "x": [float((i * 7 + k) % 5) for k in range(4)],
                        "label": LABELS[i % 4]}).encode() for i in range(start, start + count)]


def _wait(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_running_trainer_continues_from_a_rollback_and_its_lineage_holds_every_event_once(tmp_path: Path, caplog):
    store = tmp_path / "store"
    source = MemorySource("events", [_values(0, 240), []])  # partition 1 gets events only later
    config = DaemonConfig(input_topic="events", model_store=str(store), checkpoint_every_events=40, max_batch=8,
                          http_port=None, metrics=False, trained_ids_log=tmp_path / "trained.log",
                          snapshot_every_seconds=0.0, processing=ProcessingConfig(
                              learner_config=LearnerConfig(memory_size=16, batch_size=4, device="cpu")))
    daemon = Daemon(config, lambda resume, dropped: (_resumed(source, resume), ListSink()))
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    blobs = DirectoryBlobStore(store)
    _wait(lambda: (found := versions(blobs)) and found[-1].offsets.get(0) == 240, "all of partition 0 checkpointed")
    source.append(1, _values(1000, 40))
    _wait(lambda: (found := versions(blobs)) and found[-1].offsets.get(1) == 40 and 1 not in found[0].offsets,
          "partition 1 checkpointed, the oldest checkpoint from before it")
    oldest = versions(blobs)[0]
    published_before = int(newest_snapshot_marker(blobs)["version"])

    rolled = rollback(blobs, oldest.version)
    assert rolled.version > published_before  # a new version above anything served: versions never go back
    assert int(newest_snapshot_marker(blobs)["version"]) == rolled.version  # replicas get it at their next refresh
    assert history(blobs)[-1]["to_version"] == oldest.version

    _wait(lambda: daemon.processor.model_version >= rolled.version, "the trainer adopted the rollback")
    assert f"continuing from {rolled.checkpoint} (version {rolled.version})" in caplog.text
    source.append(0, _values(240, 40))
    _wait(lambda: daemon.processor.next_offsets.get(0) == 280 and daemon.processor.next_offsets.get(1) == 40,
          "both partitions learned again, to their ends")
    daemon.request_stop()
    runner.join(60)
    ids = read_ids(tmp_path / "trained.log")
    expected = [f"e{i}" for i in range(280)] + [f"e{i}" for i in range(1000, 1040)]
    assert sorted(ids) == sorted(expected)  # every event once in the final model's lineage, partition 1's too
    assert versions(blobs)[-1].version > rolled.version  # it went on from the rolled-back model


def _resumed(source: MemorySource, resume) -> MemorySource:
    source.resume = resume
    source.positions.clear()
    source.assign({0, 1})
    return source
