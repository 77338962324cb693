"""No Docker engine runs here: check what can be checked without one."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()


def _instruction(name: str) -> list[str]:
    return [line for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]


def test_entrypoint_is_exec_form_and_the_command_it_names_exists():
    entrypoint = _instruction("ENTRYPOINT")
    assert entrypoint == ['ENTRYPOINT ["hle-stream", "run"]']
    exe = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
    done = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--bootstrap-servers" in done.stdout


def test_runs_as_a_non_root_user_with_a_checkpoint_volume():
    users = _instruction("USER")
    assert users and users[-1] not in ("USER root", "USER 0")
    assert _instruction("VOLUME") == ["VOLUME /var/lib/hle-stream"]
    assert "HLE_CHECKPOINT_DIR=/var/lib/hle-stream/checkpoints" in DOCKERFILE


def test_healthcheck_probes_healthz_on_the_served_port():
    assert re.search(r"HEALTHCHECK .*\n.*127\.0\.0\.1:8080/healthz", DOCKERFILE)
    assert "HLE_HTTP_PORT=8080" in DOCKERFILE and "EXPOSE 8080" in DOCKERFILE


def test_cpu_torch_by_default_and_cuda_by_build_argument():
    assert "ARG TORCH_INDEX=cpu" in DOCKERFILE
    assert DOCKERFILE.index("pip install \"torch==") < DOCKERFILE.index("RUN pip install \".[s3,text]\"")
