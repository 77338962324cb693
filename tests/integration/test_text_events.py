"""Text events end to end, as a user runs them: ``produce --jsonl`` onto the local broker, the
daemon encodes and learns them (its /metrics and progress line show the encoder's cost, its
/predict takes text too), and ``tail`` reads back a prediction per text event and a dead letter
per bad one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from connectors.broker import free_port

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
SUBJECTS = {"hardware/printer": "the printer jams and prints blank pages", "hardware/screen": "the screen flickers",
            "account/login": "cannot log in after the password reset", "account/billing": "charged twice this month"}
GOOD = 48


def _cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return -1.0
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_text_events_go_through_the_local_broker_to_a_prediction_each(tmp_path, start_broker):
    labels = list(SUBJECTS)
    lines = [json.dumps({"id": f"t{i}", "text": f"{SUBJECTS[labels[i % 4]]} (ticket {i})", "label": labels[i % 4]})
             for i in range(GOOD)]
    lines += [json.dumps({"id": "both", "text": "a text", "x": [1.0]}), json.dumps({"id": "long", "text": "w" * 300})]
    with start_broker(tmp_path / "broker.log") as broker:
        servers = ["--bootstrap-servers", broker.bootstrap_servers]
        done = _cli("produce", "--jsonl", "-", *servers, cwd=tmp_path, stdin="\n".join(lines))
        assert done.returncode == 0 and f"sent {GOOD + 2} events" in done.stderr, done.stderr
        port = free_port()
        log = tmp_path / "daemon.log"
        daemon = subprocess.Popen([EXE, "run", *servers, "--checkpoint-dir", str(tmp_path / "ckpt"),
                                   "--http-port", str(port), "--max-text-chars", "200", "--encoder-max-tokens", "32",
                                   "--report-every-seconds", "1", "--max-batch", "16"],
                                  cwd=tmp_path, stderr=open(log, "wb"), env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            deadline = time.monotonic() + 240
            while _metric(port, "hle_events_consumed_total") < GOOD + 2:
                assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            assert _metric(port, "hle_text_events_encoded_total") == GOOD
            assert _metric(port, "hle_text_encode_duration_seconds_count") >= GOOD // 16
            request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST",
                                             data=json.dumps({"id": "asked", "text": "my printer jams"}).encode())
            answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
            assert answer["predictions"][0]["id"] == "asked" and answer["predictions"][0]["model_version"] > 0
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        assert daemon.returncode == 0, log.read_text()[-3000:]
        assert "text encoder" in log.read_text() and "ms/batch" in log.read_text()
        read = _cli("tail", "predictions", "--json", "--from-beginning", *servers, cwd=tmp_path)
        assert sorted(json.loads(line)["id"] for line in read.stdout.splitlines()) == sorted(f"t{i}" for i in range(GOOD))
        dead = _cli("tail", "dead-letters", "--json", "--from-beginning", *servers, cwd=tmp_path)
        assert [json.loads(line)["reason"] for line in dead.stdout.splitlines()] == ["wrong_type", "too_large"]
