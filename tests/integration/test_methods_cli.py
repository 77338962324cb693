"""Methods and learner options through the ``hle-stream`` command, as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from hle_stream.core.config import LearnerConfig
from hle_stream.core.methods import PRESETS, equivalent

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")


def test_the_cli_refuses_a_former_name_and_a_bad_option_with_one_line_and_exit_code_2(tmp_path):
    former = subprocess.run([EXE, "run", "--method", "pl-fms-ancestor-hint-after-ramp-colour-aug-lda-unit-tree",
                             "--print-config"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert former.returncode == 2 and "Traceback" not in former.stderr
    assert equivalent("pl-fms-ancestor-hint-after-ramp-colour-aug-lda-unit-tree") in " ".join(former.stderr.split())
    bad = subprocess.run([EXE, "run", "--method", "er", "--learner", "importance_probe=8", "--print-config"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "importance_probe=8 needs eviction=balanced-importance" in bad.stderr


def test_print_config_shows_every_learner_option_and_where_it_came_from(tmp_path):
    (tmp_path / "c.toml").write_text("memory-size = 300\n[learner]\nvector_dropout = 0.25\n")
    done = subprocess.run([EXE, "run", "--config", str(tmp_path / "c.toml"), "--learner", "lr=0.001",
                           "--print-config"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("[learner]", 1)[1]
    assert sum(line.lstrip("# ").split(" = ")[0] in asdict(LearnerConfig()) for line in table.splitlines()) == len(
        asdict(LearnerConfig()))
    assert f"vector_dropout = 0.25  # config file {tmp_path / 'c.toml'} [learner]" in table
    assert "lr = 0.001  # --learner (command line)" in table
    assert "# memory_size = 300  # --memory-size (config file" in table
    assert '# replay_supervision = "path"  # method hle' in table
    assert "# cutmix = true  # default" in table


def test_run_help_lists_the_methods_in_two_lines_at_80_columns(tmp_path):
    done = subprocess.run([EXE, "run", "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"COLUMNS": "80", "PATH": str(Path(EXE).parent)})
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("--method "))
    two_lines = " ".join(lines[start:start + 2])
    assert all(f" {name}," in two_lines or f" {name}." in two_lines for name in PRESETS), lines[start:start + 3]
