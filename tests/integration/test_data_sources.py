"""Built-in datasets are found where a user's would be, or fetched from a publisher (a local HTTP
server stands in for it: these machines have no network) and checked; without either, one line
says how to get them."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hle_stream.eval.datasets import DatasetUnavailable, dataset_folder, sources
from hle_stream.eval.datasets.sources import SOURCES

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
FILES = [f.name for f in SOURCES["fashion-mnist"].files]


@pytest.fixture()
def publisher(tmp_path):
    """An HTTP server on loopback serving the Fashion-MNIST files found on this machine."""
    served = tmp_path / "served"
    shutil.copytree(dataset_folder("fashion-mnist"), served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _fetch(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HLE_CACHE_DIR": str(cache)}
    return subprocess.run([EXE, "data", "fetch", "fashion-mnist", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_fetch_downloads_checks_and_keeps_the_files_in_the_user_cache(tmp_path, publisher):
    _, url = publisher
    done = _fetch(tmp_path / "cache", "--url", url)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "cache" / "data" / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert all(sources._checks_out(folder / f.name, f) for f in SOURCES["fashion-mnist"].files)
    again = _fetch(tmp_path / "cache", "--url", "http://127.0.0.1:1/")  # already there: nothing downloaded
    assert again.returncode == 0, again.stderr


def test_a_file_that_does_not_match_its_checksum_is_refused_and_nothing_is_kept(tmp_path, publisher):
    served, url = publisher
    (served / FILES[1]).write_bytes((served / FILES[1]).read_bytes()[:-10])
    done = _fetch(tmp_path / "cache", "--url", url)
    assert done.returncode == 4 and "does not match its published checksum" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache" / "data" / "fashion-mnist").exists()


def test_offline_the_fetch_is_one_line_with_exit_code_4(tmp_path):
    with socket.socket() as closed:  # a port nobody listens on: the download is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = _fetch(tmp_path / "cache", "--url", f"http://127.0.0.1:{port}/")
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: cannot download http://127.0.0.1:") and len(done.stderr.splitlines()) == 1


def test_a_dataset_found_nowhere_says_both_ways_to_get_it_and_that_synthetic_runs_now(tmp_path, monkeypatch):
    monkeypatch.setenv("HLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HLE_DATA_ROOT", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATASETS", tmp_path / "system")
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "clone")
    with pytest.raises(DatasetUnavailable) as missing:
        dataset_folder("fashion-mnist", tmp_path / "mine")
    message = str(missing.value)
    for expected in ("hle-stream data fetch fashion-mnist", "apt-get install dataset-fashion-mnist",
                     str(tmp_path / "cache" / "data" / "fashion-mnist"), "hle-stream demo --dataset synthetic",
                     str(tmp_path / "mine" / "fashion-mnist"), str(tmp_path / "system" / "fashion-mnist")):
        assert expected in message
    assert "\n" not in message


def test_datasets_are_looked_for_in_the_given_root_the_cache_the_system_then_beside_the_repository(tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setenv("HLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HLE_DATA_ROOT", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATASETS", tmp_path / "system")
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "clone")
    places = [tmp_path / "shared" / "data", tmp_path / "system", tmp_path / "cache" / "data", tmp_path / "mine"]
    for place in places:  # each new one found before the ones made earlier
        (place / "fashion-mnist").mkdir(parents=True)
        assert dataset_folder("fashion-mnist", tmp_path / "mine") == place / "fashion-mnist"
