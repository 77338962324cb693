"""The CLI run as a user runs it: the installed ``hle-stream`` console script, in a subprocess."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _hle_stream(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = _hle_stream("bench", "--dataset", "synthetic", "--scenario", "multi-depth", "--methods", "er,pl-fms",
                       "--seeds", "0", "--preset", "quick", "--out", str(out), cwd=out)
    assert done.returncode == 0, done.stderr
    return out, done


def test_bench_writes_json_markdown_and_plot(bench_report):
    out, done = bench_report
    report = json.loads((out / "report.json").read_text())
    for method in ("er", "pl-fms"):
        run = report["results"][method]["0"]
        for level in ("1", "2", "3"):
            row = run["levels"][level]
            assert 0.0 <= row["a_auc"] <= 1.0 and 0.0 <= row["a_last"] <= 1.0
        assert run["events_per_second"] > 0 and run["events"] == 3000
    assert report["config"]["preset"] == "quick" and report["machine"]["cpu_count"] >= 1
    table = (out / "report.md").read_text()
    assert "| pl-fms |" in table and "A_auc" in table
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "finished multi-depth pl-fms seed 0" in done.stderr


def test_bench_accepts_a_user_npz_made_by_export(tmp_path):
    data = tmp_path / "mine.npz"
    exported = _hle_stream("export-npz", "--dataset", "synthetic", "--out", str(data), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    done = _hle_stream("bench", "--data", str(data), "--scenario", "single-label", "--methods", "er",
                       "--seeds", "1", "--preset", "quick", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["results"]["er"]["1"]["levels"]) == {"1", "2"}


def test_bench_explains_bad_options(tmp_path):
    done = _hle_stream("bench", "--dataset", "synthetic", "--methods", "er,magic", cwd=tmp_path)
    assert done.returncode != 0 and "unknown method magic" in done.stderr
    done = _hle_stream("bench", cwd=tmp_path)
    assert done.returncode != 0 and "exactly one of --dataset or --data" in done.stderr


def test_broker_command_serves_kafka_on_loopback_and_stops_on_sigterm(tmp_path):
    import signal
    import socket
    import time

    from connectors.broker import free_port

    port = free_port()
    exe = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
    process = subprocess.Popen([exe, "broker", "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "broker did not come up"
                time.sleep(0.1)
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=[f"127.0.0.1:{port}"])
        assert admin.describe_cluster()["brokers"]
        admin.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    assert f"127.0.0.1:{port}" in process.stderr.read()


def test_demo_runs_broker_producer_and_daemon_end_to_end(tmp_path):
    done = _hle_stream("demo", "--dataset", "synthetic", "--events", "600", "--report-every", "200", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("events")]
    assert len(lines) >= 3 and "level 3:" in lines[-1]
    assert "demo finished" in done.stdout


def _refused_run(checkpoint_dir: Path, *options: str) -> str:
    """``hle-stream run`` that must refuse to start: exit 2, no traceback; returns its stderr."""
    done = _hle_stream("run", "--checkpoint-dir", str(checkpoint_dir), "--bootstrap-servers", "127.0.0.1:1", *options,
                       cwd=checkpoint_dir)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    return done.stderr


def test_run_refuses_a_checkpoint_of_another_format_with_a_clear_message_and_exit_code_2(tmp_path):
    from hle_stream.service.checkpoint import CheckpointStore

    path = CheckpointStore(tmp_path).save({"n": 1})
    path.write_bytes(path.read_bytes().replace(b"HLECKPT 2 ", b"HLECKPT 9 ", 1))
    assert "format 9; this hle-stream reads format 2" in _refused_run(tmp_path)


def test_run_refuses_a_checkpoint_directory_another_daemon_holds_with_exit_code_2(tmp_path):
    from hle_stream.service.checkpoint import CheckpointStore

    holder = CheckpointStore(tmp_path)  # as a running daemon holds it
    try:
        assert "is in use by another hle-stream" in _refused_run(tmp_path)
    finally:
        holder.close()


def test_run_refuses_a_checksummed_file_that_is_not_a_daemon_checkpoint_with_exit_code_2(tmp_path):
    from hle_stream.service.checkpoint import CheckpointStore

    store = CheckpointStore(tmp_path)
    store.save({"something": "else"})
    store.close()
    assert "is not an hle-stream daemon checkpoint" in _refused_run(tmp_path)


def test_run_refuses_to_serve_beyond_loopback_without_a_token(tmp_path):
    assert "set --http-token" in _refused_run(tmp_path, "--http-host", "0.0.0.0")


def test_run_refuses_a_busy_http_port_at_once_with_exit_code_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert "is the port in use?" in _refused_run(tmp_path, "--http-port", str(taken.getsockname()[1]))
