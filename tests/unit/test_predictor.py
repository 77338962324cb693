import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
    # level 2's best class overall is b/y (0.8), but the path goes on only under a: a/x is 0.2
    assert [(p["level"], p["label"]) for p in first] == [(1, "a")]
    assert first[0]["probability"] == pytest.approx(0.9)
    assert [(p["level"], p["label"]) for p in second] == [(1, "b")]  # NaN at level 2: the path ends there
    assert [p["label"] for p in prediction_paths(tree, probs, rows=1, threshold=0.1)[0]] == ["a", "a/x", "a/x/1"]


SEGMENTS = st.sampled_from("abc")


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join), min_size=1, max_size=12),
       rows=st.integers(1, 4), threshold=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_every_served_path_is_a_path_of_the_tree_with_the_best_child_at_each_step(labels, rows, threshold, seed):
    tree = LabelTree()
    for label in labels:
        tree.add(label)
    generator = torch.Generator().manual_seed(seed)
    probs = [torch.rand(rows, tree.num_classes(level), generator=generator) for level in range(1, tree.depth + 1)]
    for row, path in enumerate(prediction_paths(tree, probs, rows, threshold)):
        parent = None
        for level, step in enumerate(path, start=1):
            assert step["level"] == level and step["probability"] >= threshold
            assert (step["label"].rpartition("/")[0] or None) == parent  # nested in the class above
            siblings = [i for i in range(tree.num_classes(level))
                        if level == 1 or tree.path_of(level - 1, tree.parent_index(level, i)) == parent]
            assert step["probability"] == pytest.approx(max(float(probs[level - 1][row, i]) for i in siblings))
            parent = step["label"]
        if len(path) < tree.depth:  # it stopped: no child of the last class, or the best one is not sure enough
            level = len(path) + 1
            children = [i for i in range(tree.num_classes(level))
                        if level == 1 or tree.path_of(level - 1, tree.parent_index(level, i)) == parent]
            assert not children or max(float(probs[level - 1][row, i]) for i in children) < threshold


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
