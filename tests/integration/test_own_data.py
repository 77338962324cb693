"""Own events in, predictions out: ``produce --jsonl`` and ``tail`` against the local broker,
and the "Use your own data" example of docs/events.md run as a user would paste it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.broker import free_port

REPO = Path(__file__).resolve().parents[2]
EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")


@pytest.fixture(scope="module")
def broker(tmp_path_factory, start_broker):
    with start_broker(tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


def _cli(*args: str, cwd: Path, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_produce_jsonl_sends_each_event_and_reports_bad_lines_and_tail_reads_them_back(broker, tmp_path):
    servers = ["--bootstrap-servers", broker.bootstrap_servers]
    lines = [json.dumps({"id": f"j{i}", "x": [float(i), 1.0], "label": "a/b"}) for i in range(5)]
    lines[2:2] = ["{broken", "", "[1, 2]"]
    done = _cli("produce", "--jsonl", "-", "--topic", "own-events", *servers, cwd=tmp_path, stdin="\n".join(lines))
    assert done.returncode == 0, done.stderr
    assert "line 3 skipped: not JSON" in done.stderr and "line 5 skipped: not an event" in done.stderr
    assert "sent 5 events to own-events" in done.stderr and "2 lines skipped" in done.stderr
    read = _cli("tail", "--topic", "own-events", "--json", *servers, cwd=tmp_path)
    assert read.returncode == 0, read.stderr
    assert [json.loads(line)["id"] for line in read.stdout.splitlines()] == [f"j{i}" for i in range(5)]
    newest = _cli("tail", "--topic", "own-events", "--json", "--limit", "2", *servers, cwd=tmp_path)
    assert [json.loads(line)["id"] for line in newest.stdout.splitlines()] == ["j3", "j4"]
    first = _cli("tail", "--topic", "own-events", "--json", "--limit", "2", "--from-beginning", *servers, cwd=tmp_path)
    assert [json.loads(line)["id"] for line in first.stdout.splitlines()] == ["j0", "j1"]


def test_tail_of_a_missing_topic_or_an_unknown_kind_is_one_clear_error(broker, tmp_path):
    done = _cli("tail", "--topic", "no-such-topic", "--bootstrap-servers", broker.bootstrap_servers, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: topic 'no-such-topic' does not exist on "
                                                    f"{broker.bootstrap_servers}")
    done = _cli("tail", "gossip", cwd=tmp_path)
    assert done.returncode == 2 and "unknown 'gossip'" in done.stderr


def _readme_example() -> str:
    readme = (REPO / "docs" / "events.md").read_text()
    match = re.search(r"<!-- own-data-example[^>]*-->\n```bash\n(.*?)```", readme, re.S)
    assert match, "the own-data example of docs/events.md is gone"
    return match.group(1)


def test_the_readme_own_data_example_runs_from_an_npz_to_predictions(tmp_path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HLE_BROKER_PORT": str(port),
           "HLE_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "PATH": f"{Path(EXE).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -e\n" + _readme_example()
    process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the example's broker and daemon die with it
    assert process.returncode == 0, err[-3000:]
    assert "line 2401 skipped: not JSON" in err and "sent 2400 events" in err
    assert "classes per level [3, 6, 12]" in err  # shuffled: every class of the synthetic tree, learned
    predictions = out.strip().splitlines()
    assert len(predictions) == 5 and all(line.startswith("mine-") for line in predictions)
    assert all(" v" in line and "no level sure enough" not in line for line in predictions)  # the newest: learned
