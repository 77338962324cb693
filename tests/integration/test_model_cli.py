"""``hle-stream model list|show|rollback`` as a user runs it, on a model store a daemon wrote."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from connectors.memory import ListSink, MemorySource
from hle_stream.core.config import LearnerConfig
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Daemon

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")


def _store(tmp_path: Path) -> Path:
    values = [json.dumps({"id": f"e{i}", "x": [float(i % 3)] * 4, "label": "ab"[i % 2]}).encode() for i in range(96)]
    config = DaemonConfig(model_store=str(tmp_path / "store"), http_port=None, metrics=False, max_events=96,
                          checkpoint_every_events=24, snapshot_every_seconds=0.0, max_batch=8,
                          processing=ProcessingConfig(learner_config=LearnerConfig(memory_size=16, batch_size=4,
                                                                                   device="cpu")))
    Daemon(config, lambda resume, dropped: (MemorySource("hle-events", [values], resume=resume), ListSink())).run()
    return tmp_path / "store"


def _model(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "model", *args], capture_output=True, text=True, timeout=120)


def test_list_show_and_rollback_a_model_store(tmp_path):
    store = str(_store(tmp_path))
    listed = _model("list", "--model-store", store, "--json")
    assert listed.returncode == 0, listed.stderr
    found = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(found) == 3 and "3 versions" in listed.stderr
    offsets = [v["offsets"]["0"] for v in found]
    assert offsets == sorted(offsets) and offsets[0] < 96 == offsets[-1]  # oldest first
    assert found[0]["events_learned"] == offsets[0] and set(found[0]["accuracy"]) == {"1"}
    oldest, newest = found[0]["version"], found[-1]["version"]
    shown = _model("show", str(oldest), "--model-store", store)
    assert shown.returncode == 0 and json.loads(shown.stdout)["version"] == oldest

    rolled = _model("rollback", "--to", str(oldest), "--model-store", store)
    assert rolled.returncode == 0, rolled.stderr
    assert f"rolled back to version {oldest}: now version {newest + 1}" in rolled.stderr
    again = _model("list", "--model-store", store)
    assert f"rollback to version {oldest}" in again.stdout.splitlines()[-1]  # the newest is the rolled-back model
    assert f"rolled back to version {oldest} as version {newest + 1}" in again.stderr

    missing = _model("rollback", "--to", "999999", "--model-store", store)
    assert missing.returncode == 2 and "no checkpoint of version 999999" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
