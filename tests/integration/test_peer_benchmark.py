"""The peer benchmark's plumbing: the stream file every method reads, the worker protocol
(the bare loop, run as the orchestrator runs it) and the scoring all methods share."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "fashion-mnist").exists(), reason="needs ../shared/data")


def _orchestrator():
    spec = importlib.util.spec_from_file_location("peer_benchmark", REPO / "benchmarks" / "peer_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("peers") / "stream.npz"
    _orchestrator().write_stream(path, events=400, test_size=200, eval_period=100, seed=0, data_root=SHARED_DATA)
    return path


def test_every_event_is_its_label_as_a_flat_node_known_from_its_first_appearance(stream_file):
    data = np.load(stream_file)
    names = data["node_names"]
    assert [names[n] for n in data["stream_nodes"]] == list(data["stream_labels"])
    first = data["node_first_seen"]
    assert all(first[node] <= i for i, node in enumerate(data["stream_nodes"]))
    for label in data["stream_labels"]:  # a label's prefixes are nodes one level up
        parts = str(label).split("/")
        for depth in range(1, len(parts) + 1):
            node = list(names).index("/".join(parts[:depth]))
            assert data["node_level"][node] == depth
    test = data["test_nodes"]
    deeper = test[:, 1] >= 0
    assert all(str(names[fine]).startswith(str(names[coarse]) + "/") for coarse, fine in test[deeper][:, :2])
    assert list(data["eval_positions"]) == [100, 200, 300, 400]


def test_scores_are_one_for_the_truth_and_zero_for_nothing(stream_file):
    data = np.load(stream_file)
    truth = data["test_nodes"].tolist()
    perfect = {"predictions": {str(p): truth for p in data["eval_positions"]}}
    nothing = {"predictions": {str(p): (-np.ones_like(data["test_nodes"])).tolist() for p in data["eval_positions"]}}
    score = _orchestrator().score
    assert all(row == {"a_auc": 1.0, "a_last": 1.0} for row in score(perfect, data).values())
    assert all(row == {"a_auc": 0.0, "a_last": 0.0} for row in score(nothing, data).values())


def test_the_bare_loop_worker_learns_the_stream_and_predicts_at_every_eval_position(stream_file, tmp_path):
    out = tmp_path / "bare.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "peers" / "bare_loop.py"), "--stream", str(stream_file),
                    "--out", str(out)], check=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["events"] == 400 and result["events_per_second"] > 0 and result["peak_rss_mb"] > 0
    assert sorted(map(int, result["predictions"])) == [100, 200, 300, 400]
    scores = _orchestrator().score(result, np.load(stream_file))
    assert scores[1]["a_last"] > 0.6  # two level-1 classes: it learned something
