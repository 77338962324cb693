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
    assert done.returncode != 0 and "unknown method or spec 'magic'" in done.stderr
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
    done = _hle_stream("demo", "--dataset", "synthetic", "--events", "600", "--report-every-seconds", "0.5",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if " events (" in line]
    assert len(lines) >= 2 and lines[-1].startswith("600 events") and "L3 " in lines[-1]
    assert "watch it learn: open http://127.0.0.1:" in done.stdout  # the live page
    (folder,) = tmp_path.glob("hle-demo-*")  # a run folder of its own, nothing else in the current one
    picture = folder / "accuracy.png"
    assert f"accuracy over the stream, per level: {picture}" in done.stdout and picture.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
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


def _one_line_error(done: subprocess.CompletedProcess, code: int, text: str) -> None:
    """Exit ``code``, no traceback, and the output ends with one line that says what is wrong."""
    assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(("error: ", "Error: ")) and text in last, last


def test_a_dataset_found_nowhere_is_one_line_with_what_to_do(tmp_path):
    # (Fashion-MNIST's own message and its download: tests/integration/test_data_sources.py)
    done = _hle_stream("bench", "--dataset", "cifar100", "--data-root", str(tmp_path), cwd=tmp_path)
    _one_line_error(done, 2, f"the cifar100 dataset is not in any of {tmp_path / 'cifar100' / 'cifar-100-python'}, ")
    assert "point --data-root (or HLE_DATA_ROOT) at the folder that holds cifar100/" in done.stderr
    assert "finished" not in done.stderr  # refused before any run started


def test_an_unknown_dataset_or_scenario_is_one_line_before_anything_slow(tmp_path):
    _one_line_error(_hle_stream("export-npz", "--dataset", "nope", "--out", "x.npz", cwd=tmp_path), 2,
                    "unknown dataset 'nope'; choose from fashion-mnist")
    _one_line_error(_hle_stream("demo", "--scenario", "bogus", "--data-root", str(tmp_path), cwd=tmp_path), 2,
                    "unknown scenario bogus")  # checked before the (missing) dataset is looked for


@pytest.mark.parametrize("command", [
    ["produce", "--dataset", "synthetic", "--events", "10"],
    ["tail", "predictions"],
    ["run", "--http-port", "0", "--checkpoint-dir", "ckpt"],
])
def test_an_unreachable_broker_is_one_line_and_exit_code_4(tmp_path, command):
    import time

    started = time.monotonic()
    done = _hle_stream(*command, "--bootstrap-servers", "127.0.0.1:1", cwd=tmp_path)
    print(f"{command[0]}: answered in {time.monotonic() - started:.1f} s")
    _one_line_error(done, 4, "no Kafka broker answers at 127.0.0.1:1 (waited 5 s)")
    assert "kafka" not in done.stderr.replace("Kafka broker", "")  # no client logs


def test_help_shows_every_option_and_variable_name_whole_at_80_columns(tmp_path):
    exe = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
    done = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})
    for name in ("--checkpoint-every-events", "HLE_CHECKPOINT_EVERY_EVENTS", "--http-max-connections",
                 "HLE_HTTP_MAX_CONNECTIONS", "--serving-refresh-seconds", "HLE_SERVING_REFRESH_SECONDS"):
        assert name in done.stdout, name
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_a_terminal_ctrl_c_stops_the_demo_cleanly(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: the demo checkpoints, stops the
    broker last and exits 0 without an error line (the time it takes is measured, not asserted)."""
    import signal
    import time

    exe = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
    process = subprocess.Popen([exe, "demo", "--dataset", "synthetic", "--events", "20000",
                                "--report-every-seconds", "0.5"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in process.stdout:  # wait until it learns
            if " events (" in line and not line.startswith("broker"):
                break
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
        print(f"stopped {time.monotonic() - started:.1f} s after Ctrl-C")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, err[-2000:]
    assert "demo finished" in out
    assert "ERROR" not in err and "Traceback" not in err


def test_the_demo_with_prometheus_gets_its_series_scraped(tmp_path):
    """``demo --with-prometheus``: Prometheus, with the shipped config and rules, scrapes the demo's
    daemon; it is stopped with the demo."""
    import json
    import signal
    import time
    import urllib.request

    if shutil.which("prometheus") is None:
        if os.environ.get("HLE_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is required here (HLE_REQUIRE_PROMETHEUS) but not installed")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    exe = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
    process = subprocess.Popen([exe, "demo", "--dataset", "synthetic", "--events", "20000", "--with-prometheus"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = None
        for line in process.stdout:
            if line.startswith("Prometheus"):
                url = line.split(": ", 1)[1].split("/graph")[0]
                break
        assert url, "the demo did not start Prometheus"
        deadline, scraped = time.monotonic() + 120, False
        while not scraped and time.monotonic() < deadline:
            try:
                query = f"{url}/api/v1/query?query=hle_events_consumed_total"
                scraped = bool(json.loads(urllib.request.urlopen(query, timeout=5).read())["data"]["result"])
            except OSError:
                pass
            time.sleep(1)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert scraped, "Prometheus never had the daemon's series"
    assert process.returncode == 0 and "demo finished" in out, err[-2000:]


def test_bench_with_late_labels_predicts_on_arrival_and_learns_when_the_label_comes(tmp_path):
    done = _hle_stream("bench", "--dataset", "synthetic", "--methods", "er", "--preset", "quick",
                       "--label-delay", "1000", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    run = report["results"]["er"]["0"]
    assert report["config"]["label_delay"] == run["label_delay"] == 1000
    assert {"1", "2"} <= set(run["levels"])  # level 3's labels may all come after the stream's end
    assert all(0.0 <= row["a_auc"] <= 1.0 for row in run["levels"].values())
    assert "labels 1000 events late" in (tmp_path / "report.md").read_text()


def test_bench_places_a_run_in_a_regime_and_runs_the_paper_faithful_methods(tmp_path):
    done = _hle_stream("bench", "--dataset", "synthetic", "--methods", "er-paper,pl-fms-reference", "--preset", "quick",
                       "--memory-share", "0.05", "--online-iter", "0.5", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    for method in ("er-paper", "pl-fms-reference"):
        run = report["results"][method]["0"]
        assert run["events"] == 3000 and run["config"]["memory_size"] == 150  # 5 % of the stream
        assert run["config"]["online_iter"] == 0.5 and run["config"]["importance_period"] == 4
        assert run["train_steps"] == 1500  # half a step per sample
    assert report["results"]["er-paper"]["0"]["config"]["exp_reset_gamma"] == 0.9999
    assert report["results"]["pl-fms-reference"]["0"]["config"]["importance_rule"] == "released"
    assert report["config"]["preset_settings"]["memory_share"] == 0.05
    assert "Memory 150 samples (5.0 % of the 3000-event stream), 0.5 gradient steps per sample." in (
        tmp_path / "report.md").read_text()


def test_bench_refuses_a_memory_size_and_a_share_together(tmp_path):
    done = _hle_stream("bench", "--dataset", "synthetic", "--memory-size", "100", "--memory-share", "0.1",
                       "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "not both" in done.stderr


def test_bench_runs_ablation_specs_and_learner_options_by_name(tmp_path):
    ablations = Path(__file__).resolve().parents[2] / "benchmarks" / "ablations.toml"
    done = _hle_stream("bench", "--dataset", "synthetic", "--preset", "quick", "--ablations", str(ablations),
                       "--methods", "hle,er-feature-drop", "--learner", "vector_dropout=0", "--learner", "lr=0.001", "--jobs", "2",
                       "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "report.json").read_text())["results"]
    assert set(results) == {"hle[vector_dropout=0.0,lr=0.001]", "er-feature-drop[vector_dropout=0.0,lr=0.001]"}
    configs = {name: seeds["0"]["config"] for name, seeds in results.items()}
    assert all(config["vector_dropout"] == 0 and config["lr"] == 0.001 for config in configs.values())
    assert configs["er-feature-drop[vector_dropout=0.0,lr=0.001]"]["eviction"] == "reservoir"
    assert configs["hle[vector_dropout=0.0,lr=0.001]"]["discriminant_decode"] == "tree"
    refused = _hle_stream("bench", "--dataset", "synthetic", "--methods", "er", "--learner", "discriminant_decode=tree",
                          cwd=tmp_path)
    assert refused.returncode == 2 and "discriminant_decode=tree needs discriminant_weight > 0" in refused.stderr
