import math

import pytest
import torch

from hle_stream.core.hierarchy import LabelTree
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.predictor import prediction_paths


def test_a_path_goes_coarse_to_fine_and_stops_below_the_threshold_or_at_a_non_finite_level():
    tree = LabelTree()
    for p in ("a/x/1", "b/y/2"):
        tree.add(p)
    probs = [torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([[0.2, 0.8], [math.nan, math.nan]]),
             torch.tensor([[0.55, 0.45], [1.0, 0.0]])]
    first, second = prediction_paths(tree, probs, rows=2, threshold=0.6)
    assert [(p["level"], p["label"]) for p in first] == [(1, "a"), (2, "b/y")]
    assert first[0]["probability"] == pytest.approx(0.9)
    assert [(p["level"], p["label"]) for p in second] == [(1, "b")]  # NaN at level 2: the path ends there


def test_no_levels_before_the_first_label_is_learned(small_config):
    learner = HierarchicalLearner(small_config, (4,), torch.float32)
    assert learner.predict_proba(torch.randn(3, 4)) == []
    assert learner.predict_paths(torch.randn(3, 4), 0.5) == [[], [], []]


def test_a_predictor_is_a_frozen_copy_that_answers_like_the_learner_did(small_config):
    learner = HierarchicalLearner(small_config, (4,), torch.float32)
    x = torch.randn(40, 4)
    learner.observe(x, ["a", "b", "a/x", "b/y"] * 10)
    predictor = learner.predictor()
    probe = torch.randn(5, 4)
    before = learner.predict_paths(probe, 0.0)
    assert predictor.predict_paths(probe, 0.0) == before and predictor.version == learner.steps
    learner.observe(x, ["a/z", "b", "a/x", "b/y"] * 10)  # training goes on, a class is added
    assert predictor.predict_paths(probe, 0.0) == before
    assert learner.predictor(predictor).tree.total_classes == predictor.tree.total_classes + 1


def test_predict_then_learn_answers_with_the_model_before_the_batch_and_learns_only_labelled_rows(small_config):
    learner = HierarchicalLearner(small_config, (4,), torch.float32)
    learner.observe(torch.randn(8, 4), ["a", "b"] * 4)
    x = torch.randn(6, 4)
    expected = learner.predict_proba(x)
    seen = []
    returned = learner.predict_then_learn(x, ["a/x", None, "b/new", None, "a", "b"],
                                          on_predicted=lambda probs: seen.append(learner.stats().seen))
    assert seen == [8]  # answered before any of the batch was learned
    assert all(torch.equal(p, q) for p, q in zip(returned, expected))
    stats = learner.stats()
    assert stats.seen == 12 and stats.classes_per_level == (2, 2)
