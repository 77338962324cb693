"""The daemon's Prometheus series: names by convention, bounded labels (the class set grows)."""

import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hle_stream.core.learner import HierarchicalLearner
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.metrics.served_paths import ServedPathQuality
from hle_stream.service.telemetry import Telemetry


def _series(telemetry: Telemetry) -> set[tuple[str, tuple]]:
    text = generate_latest(telemetry.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items())))
            for family in text_string_to_metric_families(text) for s in family.samples}


def _learn(learner, prequential, labels):
    x = torch.randn(len(labels), 8)
    prequential.update(learner.tree, labels, learner.predict(x) if learner.net.heads else [])
    learner.observe(x, labels)


def test_a_thousand_new_classes_add_no_series(small_config):
    learner = HierarchicalLearner(small_config.with_(max_classes=5000), (8,), torch.float32)
    prequential = PrequentialAccuracy()
    telemetry = Telemetry(small_config.max_depth, "er", "cpu")
    _learn(learner, prequential, ["a/a0", "b/b0"] * 4)
    telemetry.refresh(learner, prequential, ServedPathQuality(), 0.5, learner.steps)
    before = _series(telemetry)

    for start in range(0, 1000, 50):
        _learn(learner, prequential, [f"{'ab'[i % 2]}/c{start + i}" for i in range(50)])
    telemetry.refresh(learner, prequential, ServedPathQuality(), 0.5, learner.steps)
    assert learner.tree.num_classes(2) >= 1000
    assert _series(telemetry) == before
    assert {labels for name, labels in before if name == "hle_known_classes"} == {(("level", "1"),), (("level", "2"),)}


def test_series_follow_the_naming_conventions(small_config):
    telemetry = Telemetry(small_config.max_depth, "er", "cpu")
    names = {name for name, _ in _series(telemetry) if name.startswith("hle_")}
    assert "hle_dead_letters_total" in names and "hle_build_info" in names
    for name in names:
        assert not name.endswith("_ms") and "_milliseconds" not in name
        if "duration" in name:
            assert "_seconds" in name
    # every fixed dead-letter reason is there from the start, at zero
    reasons = {dict(labels)["reason"] for name, labels in _series(telemetry) if name == "hle_dead_letters_total"}
    assert "not_json" in reasons and "bad_label" in reasons
