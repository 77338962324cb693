"""The compute budget: which micro-batches take gradient steps, and what a skipped one still does
(predicted, remembered, in the lineage), on a fake clock and the in-memory loop."""

from __future__ import annotations

import json

import pytest
import torch

from connectors.memory import ListSink, MemorySource
from hle_stream.core.config import LearnerConfig
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import DEFAULT_METHOD, resolve_name
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Daemon
from hle_stream.service.lineage import read_ids
from hle_stream.service.train_budget import MIN_SHARE, TrainBudget, parse_budget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _decisions(budget: TrainBudget, clock: Clock, batches: int, lag: int, every_s: float = 0.1) -> list[bool]:
    """Micro-batches of 64 events, each taking ``every_s`` to process: 640 events/s."""
    out = []
    for _ in range(batches):
        clock.now += every_s
        out.append(budget.should_train(lag))
        budget.record(64, every_s, 0)
    return out


def test_unlimited_trains_on_every_batch_however_far_behind():
    clock = Clock()
    assert all(_decisions(TrainBudget("unlimited", clock), clock, 100, lag=10**9))


def test_auto_does_not_mistake_a_short_backlog_at_start_for_a_long_one():
    clock = Clock()
    budget = TrainBudget("auto", clock)
    clock.now += 30  # a slow start: the group join
    assert all(_decisions(budget, clock, 4, lag=200))  # 200 events at 640/s: 0.3 s of lag


def test_auto_trains_on_every_batch_while_it_keeps_up():
    clock = Clock()
    budget = TrainBudget("auto", clock)
    assert all(_decisions(budget, clock, 200, lag=10)) and budget.in_force == 1.0


def test_auto_trains_on_less_while_the_lag_is_long_and_recovers_once_it_is_short():
    clock = Clock()
    budget = TrainBudget("auto", clock)
    behind = _decisions(budget, clock, 300, lag=100_000)  # 640 events/s consumed: 150 s of lag
    assert budget.in_force == MIN_SHARE and sum(behind[-100:]) <= 2
    caught_up = _decisions(budget, clock, 300, lag=0)
    assert budget.in_force == 1.0 and all(caught_up[-100:])


def test_a_fixed_budget_allows_that_many_steps_per_second():
    clock = Clock()
    budget = TrainBudget("20", clock)
    trained = 0
    for _ in range(100):  # 10 s of batches, each costing 4 steps when trained
        clock.now += 0.1
        if budget.should_train(lag=None):
            budget.record(64, 0.1, 4)
            trained += 1
    assert 45 <= trained <= 55  # 20 steps/s over 10 s = 200 steps = 50 batches


@pytest.mark.parametrize("text", ["0", "-3", "fast", "nan", "inf"])
def test_a_budget_that_is_not_auto_unlimited_or_a_positive_rate_is_refused(text):
    with pytest.raises(ValueError, match="train-budget"):
        parse_budget(text)


def test_a_batch_not_trained_on_grows_the_tree_and_the_memory_but_takes_no_step():
    learner = HierarchicalLearner(LearnerConfig(memory_size=32, batch_size=4, device="cpu"), (5,), torch.float32)
    learner.observe(torch.randn(4, 5), ["a", "a/x", "b", "b/y"])
    steps, weights = learner.steps, [p.detach().clone() for p in learner.net.backbone.parameters()]
    head = learner.net.heads[0].weight.detach().clone()
    learner.observe(torch.randn(4, 5), ["c", "c/z", "a/w", "b"], train=False)
    assert learner.steps == steps
    assert all(torch.equal(a, b) for a, b in zip(weights, learner.net.backbone.parameters()))
    assert torch.equal(learner.net.heads[0].weight[:2], head)  # the known classes' rows untouched
    assert learner.tree.num_classes(1) == 3 and learner.seen == 8
    assert learner.stats().memory_size == 8  # the new classes entered the memory at once


def _events(count: int) -> list[bytes]:
    labels = ["a", "b", "a/x", "b/y"]
    return [json.dumps({"id": f"e{i}", "x": [float((i + k) % 5) for k in range(4)], "label": labels[i % 4]}).encode()
            for i in range(count)]


def _run_daemon(tmp_path, budget: str) -> tuple[Daemon, ListSink]:
    sink = ListSink()

    def connect(resume, on_dropped):
        return MemorySource("events", [_events(96)], {}, resume), sink

    config = DaemonConfig(checkpoint_dir=tmp_path / budget, max_events=96, max_batch=8, http_port=None,
                          metrics=False, train_budget=budget, trained_ids_log=tmp_path / f"{budget}.log",
                          processing=ProcessingConfig(learner_config=LearnerConfig(memory_size=16, batch_size=4,
                                                                                   device="cpu")))
    daemon = Daemon(config, connect)
    daemon.run()
    return daemon, sink


def test_a_daemon_with_a_tiny_budget_predicts_and_remembers_every_event_but_steps_less(tmp_path):
    unlimited, full_sink = _run_daemon(tmp_path, "unlimited")
    budgeted, sink = _run_daemon(tmp_path, "0.001")  # one step's worth of tokens at the start, then none
    assert [d["id"] for d in sink.predictions] == [d["id"] for d in full_sink.predictions]  # every event answered
    assert budgeted.learner.stats().seen == unlimited.learner.stats().seen == 96
    assert budgeted.learner.steps < unlimited.learner.steps
    trained = read_ids(tmp_path / "0.001.log")
    assert len(trained) == len(set(trained)) == 96  # in the model's lineage: remembered, once


def test_an_unlimited_budget_trains_bit_for_bit_as_the_learner_alone(tmp_path):
    daemon, _ = _run_daemon(tmp_path, "unlimited")
    alone = HierarchicalLearner(resolve_name(DEFAULT_METHOD, LearnerConfig(memory_size=16, batch_size=4, device="cpu")),
                                (4,), torch.float32)
    documents = [json.loads(v) for v in _events(96)]
    for start in range(0, 96, 8):  # the daemon's micro-batches (--max-batch 8)
        chunk = documents[start:start + 8]
        alone.predict_then_learn(torch.tensor([d["x"] for d in chunk], dtype=torch.float32),
                                 [d["label"] for d in chunk])
    assert daemon.learner.steps == alone.steps
    for (name, mine), theirs in zip(daemon.learner.net.state_dict().items(), alone.net.state_dict().values()):
        assert torch.equal(mine, theirs), name
