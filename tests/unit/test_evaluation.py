import math

import numpy as np
import pytest
import torch

from hle_stream.core.hierarchy import LabelTree
from hle_stream.eval.evaluation import AnytimeEvaluator
from hle_stream.metrics.prequential import PrequentialAccuracy


class ScriptedPredictor:
    """Answers each query with a fixed prediction table: a real tree, scripted outputs."""

    def __init__(self, tree: LabelTree, answers: list[list[list[int]]]) -> None:
        self.tree = tree
        self.answers = answers

    def predict(self, x):
        return [torch.tensor(level) for level in self.answers.pop(0)]


def test_a_auc_a_last_and_f_last_match_a_hand_computation():
    labels = ["a/a1", "a/a2", "b/b1", "b/b2"]
    tree = LabelTree()
    evaluator = AnytimeEvaluator(torch.zeros(4, 1), labels)
    # query 1: only level 1 known (a=0, b=1): predictions a,a,b,a -> 3/4.
    tree.add("a"), tree.add("b")
    evaluator.evaluate(ScriptedPredictor(tree, [[[0, 0, 1, 0]]]), 10)
    # task end: same answers -> 3/4; class a: 2/2, class b: 1/2.
    evaluator.evaluate(ScriptedPredictor(tree, [[[0, 0, 1, 0]]]), 10, task_end=True)
    # query 2: level 2 known for a1, b1 only (a/a1=0, b/b1=1); level 1 all right.
    tree.add("a/a1"), tree.add("b/b1")
    evaluator.evaluate(ScriptedPredictor(tree, [[[0, 0, 1, 1], [0, 0, 0, 1]]]), 20)
    # final task end: level 1 now predicts b for a2 -> 3/4; class a: 1/2, class b: 2/2.
    evaluator.evaluate(ScriptedPredictor(tree, [[[0, 1, 1, 1], [0, 0, 1, 1]]]), 20, task_end=True)

    summary = evaluator.summary()
    assert math.isclose(summary[1]["a_auc"], (0.75 + 1.0) / 2)
    assert math.isclose(summary[1]["a_last"], 0.75)
    assert math.isclose(summary[1]["a_avg"], (0.75 + 0.75) / 2)
    # F_last level 1: class a best 1.0 -> 0.5 (drop 0.5), class b best 0.5 -> 1.0 (drop -0.5).
    assert math.isclose(summary[1]["f_last"], 0.0)
    # level 2 (known: samples 0 and 2): query 2 -> a1 right, b1 wrong (pred 0) = 0.5.
    assert math.isclose(summary[2]["a_auc"], 0.5)
    assert math.isclose(summary[2]["a_last"], 1.0)
    assert math.isnan(summary[2]["f_last"])  # level 2 did not exist before the last task
    # coarse from fine at the end: fine preds a1,a1,b1,b1 -> ancestors a,a,b,b: all right.
    assert summary[1]["coarse_from_fine"] == 1.0


def test_prequential_accuracy_scores_every_level_of_the_path_and_misses_unknown_classes():
    tree = LabelTree()
    tree.add("a/x")
    metric = PrequentialAccuracy(window=2)
    metric.update(tree, ["a/x", "a/y"], [torch.tensor([0, 0]), torch.tensor([0, 0])])
    running = metric.running_accuracy()
    assert running[1] == 1.0
    assert running[2] == 0.5  # a/y was not known yet: a miss
    metric.update(tree, ["a/x", "a/x"], [torch.tensor([0, 0]), torch.tensor([0, 0])])
    assert metric.rolling_accuracy()[2] == pytest.approx(1.0)
    assert metric.running_accuracy()[2] == pytest.approx(0.75)


def test_prequential_accuracy_reports_outcomes_the_anytime_average_and_per_class_counts():
    tree = LabelTree()
    tree.add("a/x")
    tree.add("b/y")
    metric = PrequentialAccuracy(window=10)
    outcomes = metric.update(tree, ["a/x", "b/y"], [torch.tensor([0, 0]), torch.tensor([0, 1])])
    assert [(o.sample, o.level, o.correct) for o in outcomes] == [(0, 1, True), (0, 2, True), (1, 1, False), (1, 2, True)]
    # rolling level-1 accuracy after each sample: 1.0, then 0.5 -> anytime mean 0.75
    assert metric.anytime_accuracy()[1] == pytest.approx(0.75)
    assert metric.class_accuracy(1, 1) == (0, 1)  # "b" seen once, missed
    assert metric.class_accuracy(2, 0) == (1, 1)
    assert metric.class_accuracy(3, 0) == (0, 0)


def test_drift_monitor_fires_on_the_level_whose_error_jumps_and_not_on_a_steady_one():
    from hle_stream.metrics.prequential import Outcome
    from hle_stream.service.drift import DriftMonitor

    monitor = DriftMonitor()
    steady = [Outcome(i, 1, 0, 0) for i in range(2000)]
    assert monitor.update(steady) == []
    # level 2: right for 1,000 samples, then wrong for 1,000: a drift ADWIN must flag
    jump = [Outcome(i, 2, 0, 0) for i in range(1000)] + [Outcome(1000 + i, 2, 0, 1) for i in range(1000)]
    fired = monitor.update(jump + [Outcome(0, 1, 0, 0)])
    assert [o.level for o in fired] == [2]
    assert fired[0].sample >= 1000


def test_prequential_state_round_trips_through_plain_data_and_goes_on_identically():
    import io

    tree = LabelTree()
    tree.add("a/x")
    tree.add("b/y")
    metric = PrequentialAccuracy(window=3)
    for guess in ([0, 1], [1, 1], [0, 0], [1, 0]):
        metric.update(tree, ["a/x", "b/y"], [torch.tensor(guess), torch.tensor([0, 0])])
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    restored = PrequentialAccuracy.from_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for m in (metric, restored):
        m.update(tree, ["b/y", "a/x"], [torch.tensor([1, 1]), torch.tensor([1, 0])])
    assert restored.rolling_accuracy() == metric.rolling_accuracy()
    assert restored.running_accuracy() == metric.running_accuracy()
    assert restored.anytime_accuracy() == metric.anytime_accuracy()
    assert restored.per_class == metric.per_class


def test_the_rolling_window_equals_river_s_rolling_accuracy_through_a_checkpoint():
    from river import metrics, utils

    tree = LabelTree(max_depth=1)
    for name in "abc":
        tree.add(name)
    rng = np.random.default_rng(0)
    ours, river_rolling, anytime = PrequentialAccuracy(window=50), utils.Rolling(metrics.Accuracy, window_size=50), 0.0
    for step in range(300):
        truth, guess = (int(v) for v in rng.integers(0, 3, 2))
        ours.update(tree, ["abc"[truth]], [torch.tensor([guess])])
        river_rolling.update(truth, guess)
        anytime += river_rolling.get()
        if step == 150:
            ours = PrequentialAccuracy.from_state_dict(ours.state_dict())
        assert ours.rolling_accuracy()[1] == river_rolling.get()
    assert ours.anytime_accuracy()[1] == pytest.approx(anytime / 300, rel=1e-12)
