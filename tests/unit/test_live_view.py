"""The live page's state: a bounded history sampled every few seconds, the moments classes
appeared, and the last predictions, without touching what the sink receives."""

import torch

from connectors.memory import ListSink
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.service import live_view
from hle_stream.service.live_view import LiveView
from hle_stream.service.serving import class_report


def test_history_is_sampled_and_bounded_and_each_expansion_is_marked(small_config, monkeypatch):
    monkeypatch.setattr(live_view, "HISTORY_POINTS", 5)
    view, prequential = LiveView(), PrequentialAccuracy()
    learner = HierarchicalLearner(small_config, (4,), torch.float32)
    learner.observe(torch.randn(4, 4), ["a", "b", "a/x", "b/y"])
    view.sample(prequential, learner, consumed=0, lag=3, now=100.0)
    view.sample(prequential, learner, consumed=10, lag=3, now=100.5)  # within SAMPLE_S: no point
    learner.observe(torch.randn(2, 4), ["c", "c/z"])
    view.sample(prequential, learner, consumed=40, lag=0, now=102.0)
    assert [p["t"] for p in view.history] == [100.0, 102.0] and view.history[-1]["events_per_second"] == 20.0
    assert [(e["t"], e["level"], e["new_classes"]) for e in view.expansions] == [
        (100.0, 1, 2), (100.0, 2, 2), (102.0, 1, 1), (102.0, 2, 1)]
    view = LiveView()  # made with HISTORY_POINTS = 5
    for second in range(20):
        view.sample(prequential, learner, consumed=second, lag=None, now=200.0 + 2 * second)
    assert len(view.history) == 5  # a long run holds a fixed amount


def test_the_sink_gets_every_record_and_the_view_keeps_the_last_predictions(small_config):
    view, sink = LiveView(), ListSink()
    watched = view.watching(sink)
    for i in range(30):
        watched.prediction({"id": str(i), "model_version": 1, "path": []})
    assert len(sink.predictions) == 30 and [p["id"] for p in view.predictions] == [str(i) for i in range(10, 30)]
    document = view.document(None, PrequentialAccuracy(), 7, class_report)
    assert document["model_version"] == 7 and document["tree"] == [] and len(document["predictions"]) == 20
