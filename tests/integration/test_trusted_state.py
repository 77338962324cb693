"""State that meets the wrong world is refused at start, with one line, and nothing is skipped
silently: a checkpoint meeting a new broker (or a topic made anew), and a store whose every
checkpoint is unusable. ``--reset-offsets`` says where to read instead."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hle_stream.service.lineage import read_ids

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
TOPIC = "trusted"


def _produce(broker, count: int, seed: int) -> None:
    done = subprocess.run([EXE, "produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", TOPIC,
                           "--dataset", "synthetic", "--events", str(count), "--seed", str(seed)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _run(broker, tmp_path: Path, max_events: int, *extra: str) -> subprocess.CompletedProcess:
    """``hle-stream run`` until ``max_events`` are consumed (or it is refused)."""
    args = [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", TOPIC,
            "--predictions-topic", f"{TOPIC}-pred", "--dead-letter-topic", f"{TOPIC}-dlq", "--group-id", "trusted-g",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--trained-ids-log", str(tmp_path / "trained.log"),
            "--memory-size", "64", "--http-port", "0", "--no-metrics", "--max-events", str(max_events),
            "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _errors(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def test_a_checkpoint_meeting_a_new_broker_is_refused_then_continued_from_where_the_operator_says(start_broker,
                                                                                                  tmp_path):
    with start_broker(tmp_path / "first.log") as first:
        _produce(first, 300, seed=0)
        done = _run(first, tmp_path, 300)
        assert done.returncode == 0, done.stderr
    assert len(read_ids(tmp_path / "trained.log")) == 300
    with start_broker(tmp_path / "second.log") as second:  # the same topic name, a new log
        _produce(second, 200, seed=1)
        refused = _run(second, tmp_path, 200)
        assert refused.returncode == 2 and len(_errors(refused)) == 1, refused.stderr
        assert "the broker's topic of that name is another" in refused.stderr and "--reset-offsets" in refused.stderr
        assert len(read_ids(tmp_path / "trained.log")) == 300  # nothing consumed, nothing learned
        done = _run(second, tmp_path, 200, "--reset-offsets", "earliest")
        assert done.returncode == 0, done.stderr
    ids = read_ids(tmp_path / "trained.log")
    assert len(ids) == 500  # the model went on, over every event of the new topic, from its first
    assert "continues from the topic's earliest offsets" in done.stderr


def test_every_checkpoint_unusable_is_refused_unless_a_new_model_is_asked_for_from_the_earliest(start_broker,
                                                                                                tmp_path):
    with start_broker(tmp_path / "broker.log") as broker:
        _produce(broker, 200, seed=0)
        assert _run(broker, tmp_path, 200, "--checkpoint-every-events", "50").returncode == 0
        checkpoints = sorted((tmp_path / "ckpt").glob("checkpoint-*.pt"))
        assert checkpoints
        for path in checkpoints:  # a disk that garbled every one
            path.write_bytes(b"garbage" + path.read_bytes()[7:])
        refused = _run(broker, tmp_path, 200)
        assert refused.returncode == 2 and len(_errors(refused)) == 1, refused.stderr
        assert "every checkpoint in" in refused.stderr and "--reset-offsets earliest" in refused.stderr
        done = _run(broker, tmp_path, 200, "--reset-offsets", "earliest")
        assert done.returncode == 0, done.stderr
    ids = read_ids(tmp_path / "trained.log")
    assert len(ids) == len(set(ids)) == 200  # the new model learned every event again, from the first
