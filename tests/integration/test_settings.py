"""One settings layer for the daemon: command line > environment > config file > defaults, every
option declared once (a field of a settings dataclass), and a checkpoint's learner settings are not silently
overridden (nor silently override the command line)."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from connectors.blob_store import DirectoryBlobStore
from connectors.memory import ListSink, MemorySource
from connectors.settings import KafkaSettings
from hle_stream import cli
from hle_stream.cli import app
from hle_stream.core.config import LearnerConfig
from hle_stream.service.checkpointer import CheckpointMismatchError
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Daemon
from hle_stream.service.lineage import TrainedIdLog
from hle_stream.service.settings import SETTINGS, SettingsError, build
from hle_stream.service.store_owner import bind_store

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")


def _run_options() -> dict[str, object]:
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params if p.name not in ("config", "print_config")}


def test_every_run_option_is_a_settings_field_and_its_defaults_build_the_default_settings():
    options = _run_options()
    assert list(options) == list(SETTINGS)
    assert {name: option.envvar for name, option in options.items()} == {name: s.env for name, s in SETTINGS.items()}
    kafka, daemon = build({name: option.default for name, option in options.items()})
    assert (kafka, daemon) == (KafkaSettings(), DaemonConfig())  # each option's default is its field's, converted


def test_a_checkpoint_dir_beside_a_model_store_is_refused_naming_both():
    defaults = {name: option.default for name, option in _run_options().items()}
    with pytest.raises(SettingsError, match="--checkpoint-dir /data/ckpt and --model-store s3://b/p name two places"):
        build({**defaults, "checkpoint_dir": "/data/ckpt", "model_store": "s3://b/p"})
    assert build({**defaults, "model_store": "s3://b/p"})[1].model_store == "s3://b/p"


def test_an_option_is_declared_once_as_a_field_and_the_command_line_takes_it_from_there():
    """No literal option in the command's source: ``run`` has only --config and --print-config of its own."""
    source = inspect.getsource(cli.run)
    assert "bootstrap_servers" not in source and "typer.Option" in source
    assert source.count("typer.Option(") == 2


def _print_config(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "run", "--print-config", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("HLE_")}, **(env or {})},
                          timeout=120)


def test_the_command_line_beats_the_environment_which_beats_the_config_file_which_beats_the_defaults(tmp_path):
    config = tmp_path / "hle-stream.toml"
    config.write_text('memory-size = 100\nbatch_size = 8\nmethod = "er"\ninput-topic = "from-file"\n'
                      'http-token = "s3cret"\n')
    done = _print_config(tmp_path, "--config", str(config), "--method", "pl-fms",
                         env={"HLE_BATCH_SIZE": "4", "HLE_MEMORY_SIZE": "200", "HLE_GROUP_ID": "from-env"})
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)
    assert lines["method"] == '"pl-fms"  # command line'
    assert lines["memory-size"] == "200  # environment" and lines["batch-size"] == "4  # environment"
    assert lines["group-id"] == '"from-env"  # environment'
    assert lines["input-topic"] == f'"from-file"  # config file {config}'
    assert lines["max-batch"] == "64  # default"
    assert "s3cret" not in done.stdout and lines["http-token"].startswith('"***"')


def test_the_printed_settings_are_a_config_file_that_gives_the_same_settings(tmp_path):
    first = _print_config(tmp_path, "--memory-size", "123", "--input-shape", "1,28,28")
    (tmp_path / "printed.toml").write_text(first.stdout)
    again = _print_config(tmp_path, "--config", str(tmp_path / "printed.toml"))
    strip = [line.split("  #")[0] for line in first.stdout.splitlines()]
    assert [line.split("  #")[0] for line in again.stdout.splitlines()] == strip


@pytest.mark.parametrize(("text", "message"), [
    ("memory-sise = 100\n", "unknown setting 'memory-sise'; did you mean memory-size?"),
    ("memory-size = \n", "is not valid TOML"),
    ("[kafka]\nbootstrap = 1\n", "unknown setting 'kafka'"),
])
def test_a_config_file_mistake_is_one_clear_error_with_exit_code_2(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    done = _print_config(tmp_path, "--config", str(tmp_path / "bad.toml"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in " ".join(done.stderr.replace("│", " ").split())


def _in_memory_run(checkpoint_dir: Path, method: str, memory_size: int) -> Daemon:
    """Learns the next 24 events of a 48-event topic (a run that resumes reads the second half)."""
    values = [json.dumps({"id": f"e{i}", "x": [float(i % 3)] * 4, "label": "ab"[i % 2]}).encode() for i in range(48)]
    config = DaemonConfig(checkpoint_dir=checkpoint_dir, http_port=None, metrics=False, max_events=24,
                          processing=ProcessingConfig(method=method, learner_config=LearnerConfig(
                              memory_size=memory_size, batch_size=4, device="cpu")))
    return Daemon(config, lambda resume, dropped: (MemorySource("hle-events", [values], resume=resume), ListSink()))


def test_a_checkpoint_trained_with_other_learner_settings_is_refused_by_name(tmp_path):
    _in_memory_run(tmp_path, "pl-fms", 16).run()
    with pytest.raises(CheckpointMismatchError, match=r"memory_size 16 \(this run: 32\)"):
        _in_memory_run(tmp_path, "pl-fms", 32).run()
    with pytest.raises(CheckpointMismatchError, match=r"eviction 'balanced-importance' \(this run: 'reservoir'\)"):
        _in_memory_run(tmp_path, "er", 16).run()
    _in_memory_run(tmp_path, "pl-fms", 16).run()  # the same settings resume


def test_the_cli_refuses_a_checkpoint_for_another_input_shape_or_dtype_in_one_line(tmp_path):
    _in_memory_run(tmp_path, "pl-fms", 16).run()  # 4 float32 features
    for option, value, named in (("--input-shape", "8", "input_shape '4' (this run: '8')"),
                                 ("--input-dtype", "uint8", "input_dtype 'float32' (this run: 'uint8')")):
        done = subprocess.run([EXE, "run", "--checkpoint-dir", str(tmp_path), "--method", "pl-fms", "--memory-size",
                               "16", "--batch-size", "4", option, value, "--http-port", "0",
                               "--bootstrap-servers", "127.0.0.1:1"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert named in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_daemon_of_another_group_is_refused_a_store_it_does_not_own_unless_told_to_take_it_over(tmp_path):
    _in_memory_run(tmp_path, "pl-fms", 16).run()  # group hle-stream owns the directory now
    common = ["--checkpoint-dir", str(tmp_path), "--method", "pl-fms", "--memory-size", "16", "--batch-size", "4",
              "--http-port", "0", "--bootstrap-servers", "127.0.0.1:1", "--max-events", "0"]
    done = subprocess.run([EXE, "run", "--group-id", "hle-stream-typo", *common], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "belongs to consumer group 'hle-stream', not 'hle-stream-typo'" in done.stderr
    owner = json.loads((tmp_path / "store-owner.json").read_text())
    assert owner["group"] == "hle-stream"  # the refused one changed nothing
    done = subprocess.run([EXE, "run", "--group-id", "hle-stream-typo", "--take-over-store", *common],
                          capture_output=True, text=True, timeout=120)
    assert "now belongs to group 'hle-stream-typo'" in done.stderr
    assert json.loads((tmp_path / "store-owner.json").read_text())["group"] == "hle-stream-typo"


def test_a_trainer_with_its_own_trained_ids_log_is_refused_a_store_whose_trainers_share_another(tmp_path):
    first = TrainedIdLog(tmp_path / "shared.log")  # the first trainer's, recorded as the store's
    bind_store(DirectoryBlobStore(tmp_path / "store"), "trainers", first.log_id)
    common = ["--role", "trainer", "--model-store", str(tmp_path / "store"), "--group-id", "trainers",
              "--http-port", "0", "--bootstrap-servers", "127.0.0.1:1"]
    done = subprocess.run([EXE, "run", *common, "--trained-ids-log", str(tmp_path / "own.log")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"keep the trained-ids log {first.log_id}" in done.stderr and "keeps another" in done.stderr


def test_the_cli_refuses_a_checkpoint_of_other_learner_settings_with_exit_code_2(tmp_path):
    _in_memory_run(tmp_path, "pl-fms", 16).run()
    done = subprocess.run([EXE, "run", "--checkpoint-dir", str(tmp_path), "--memory-size", "32", "--http-port", "0",
                           "--bootstrap-servers", "127.0.0.1:1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "memory_size 16 (this run: 32)" in done.stderr


def test_the_shipped_example_config_file_is_read_and_wins_over_the_defaults(tmp_path):
    example = Path(__file__).resolve().parents[2] / "ops" / "hle-stream.toml"
    done = _print_config(tmp_path, "--config", str(example))
    assert done.returncode == 0, done.stderr
    assert f'bootstrap-servers = "kafka:9092"  # config file {example}' in done.stdout
