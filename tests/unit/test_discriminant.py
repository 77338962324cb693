"""The streaming discriminant: its statistics on hand-computed cases, and the learner carrying it
through predictions, relabels, checkpoints and serving snapshots."""

import math

import pytest
import torch

from hle_stream.core.discriminant import MAX_FEATURES, LinearDiscriminant, Projection, StreamingDiscriminant
from hle_stream.core.experts import NoExpert
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import DEFAULT_METHOD, resolve_name
from hle_stream.core.predictor import Predictor

METHOD = DEFAULT_METHOD  # unit-length rows, levels scored along the tree
FLAT_METHOD = "pl-fms-ancestor-hint-after-ramp-colour-aug-lda"  # raw rows, levels scored flat


def test_means_count_every_class_on_a_path_and_the_covariance_is_the_pooled_within_class_one():
    # classes: 0 = "a", 1 = "a/x", 2 = "b"; samples of a/x count for a too
    d = StreamingDiscriminant(2, shrinkage=0.0, seed=0)
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [-1.0, 0.0], [-3.0, 0.0], [2.0, 4.0]])
    own = torch.tensor([1, 1, 2, 2, 1])
    paths = torch.tensor([[0, 1], [0, 1], [2, -1], [2, -1], [0, 1]])
    d.update(x[:2], own[:2], paths[:2], 3)  # one batch, then another: Welford's update across batches
    d.update(x[2:], own[2:], paths[2:], 3)
    assert d.counts.tolist() == [3, 3, 2]
    assert torch.allclose(d.sums[0], torch.tensor([6.0, 6.0], dtype=torch.float64))
    # a row deviates from its class's mean as it was before the batch: in batch 1 a/x had none (nothing
    # added), in batch 2 b had none, and the third a/x deviates (0, 3) from (2, 1) with weight 2/3
    assert torch.allclose(d.scatter, torch.tensor([[0.0, 0.0], [0.0, 6.0]], dtype=torch.float64))
    assert d.scattered == 1


def test_the_linear_scores_are_lda_with_the_shrunk_covariance_and_unknown_classes_get_a_uniform_share():
    d = StreamingDiscriminant(2, shrinkage=0.5, seed=0)
    d.add(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]]), torch.tensor([[0], [0], [1], [1]]))
    d.scatter = torch.tensor([[4.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    d.scattered = 2
    frozen = d.frozen([torch.tensor([0, 1, 2])])
    # covariance (2, 1) on the diagonal, trace/2 = 1.5: 0.5 * diag(2, 1) + 0.5 * 1.5 = diag(1.75, 1.25)
    precision = torch.diag(torch.tensor([1 / 1.75, 1 / 1.25]))
    means = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x = torch.tensor([[0.5, 1.0]])
    scores = x @ (means @ precision).T - 0.5 * ((means @ precision) * means).sum(1)
    log_p = frozen.log_probabilities(x)[0]
    assert torch.allclose(log_p[0, :2], torch.log_softmax(scores, dim=1)[0], atol=1e-6)
    assert log_p[0, 2].item() == pytest.approx(-math.log(2))
    assert frozen.log_probabilities(x)[0].shape == (1, 3)


def test_wide_inputs_are_projected_to_a_bounded_width_and_the_projection_is_rebuilt_from_its_seed():
    d = StreamingDiscriminant(MAX_FEATURES + 10, shrinkage=0.1, seed=3)
    x = torch.randn(4, MAX_FEATURES + 10)
    assert d.features(x).shape == (4, MAX_FEATURES) and d.scatter.shape == (MAX_FEATURES, MAX_FEATURES)
    d.update(d.features(x), torch.tensor([0, 0, 1, 1]), torch.tensor([[0], [0], [1], [1]]), 2)
    frozen = LinearDiscriminant.from_state_dict(d.frozen([torch.tensor([0, 1])]).state_dict())
    assert torch.equal(frozen.features(x), d.features(x))


def _learner(small_config, shape=(6,), method=METHOD):
    torch.manual_seed(0)
    learner = HierarchicalLearner(resolve_name(method, small_config.with_(memory_size=12)), shape, torch.float32)
    learner.observe(torch.randn(24, *shape), ["a", "b", "a/x", "b/y"] * 6, ids=list(range(24)))
    return learner


def test_a_method_without_the_discriminant_has_none(small_config):
    learner = HierarchicalLearner(resolve_name("pl-fms-ancestor-hint-after-ramp-colour-aug", small_config), (6,),
                                  torch.float32)
    assert isinstance(learner.expert, NoExpert) and "discriminant" not in learner.state_dict()


@pytest.mark.parametrize("method", [METHOD, FLAT_METHOD])
@pytest.mark.parametrize("shape", [(6,), (1, 8, 8)])
def test_a_snapshot_and_a_restored_learner_predict_like_the_learner(small_config, shape, method):
    learner = _learner(small_config, shape, method)
    probe = torch.randn(5, *shape)
    expected = learner.predict_proba(probe)
    snapshot = Predictor.from_state_dict(learner.predictor().state_dict())
    restored = HierarchicalLearner.from_state_dict(learner.state_dict())
    for p, q, r in zip(expected, snapshot.predict_proba(probe), restored.predict_proba(probe)):
        assert torch.allclose(p, q, atol=1e-6) and torch.equal(p, r)


def test_the_discriminant_moves_a_prediction_toward_the_class_whose_mean_is_nearest(small_config):
    learner = HierarchicalLearner(resolve_name(METHOD, small_config), (2,), torch.float32)
    far = torch.tensor([[10.0, 0.0], [-10.0, 0.0]])
    learner.observe(far.repeat(4, 1), ["a", "b"] * 4)
    lda = learner.expert.model.frozen([torch.tensor([0, 1])]).log_probabilities(far)[0].exp()
    assert lda[0, 0] > 0.99 and lda[1, 1] > 0.99
    net_alone = learner.predictor()
    net_alone.discriminant = None
    fused, plain = learner.predict_proba(far)[0], net_alone.predict_proba(far)[0]
    assert (fused.diagonal() > plain.diagonal()).all()


def test_a_relabelled_memory_sample_gives_its_new_finer_class_a_mean(small_config):
    learner = _learner(small_config)
    slot = int(learner.memory.slot_of(0))  # sample 0 was labelled "a"
    x = learner.memory.x[slot].clone()
    assert learner.relabel(0, "a/w")
    gid = learner.tree.global_id("a/w")
    model = learner.expert.model
    assert model.counts[gid].item() == 1
    assert torch.allclose(model.sums[gid].float(), model.features(x[None])[0])
    assert model.counts[learner.tree.global_id("a")].item() == 12  # not counted twice


def test_an_absurd_row_is_left_out_of_the_means_and_counted_and_predictions_stay_finite():
    d = StreamingDiscriminant(4, shrinkage=0.1, seed=0)
    torch.manual_seed(0)
    for _ in range(10):
        x = torch.randn(8, 4)
        own = torch.tensor([0, 1] * 4)
        d.update(x, own, own[:, None], 2)
    sums = d.sums.clone()
    poison = torch.full((1, 4), 3e38)  # the largest float32 there is
    d.update(poison, torch.tensor([0]), torch.tensor([[0]]), 2)
    d.add(poison, torch.tensor([[1]]))
    assert d.rejected == 2 and torch.equal(d.sums, sums)
    log_p = d.frozen([torch.tensor([0, 1])]).log_probabilities(torch.cat([poison, torch.randn(2, 4)]))[0]
    assert torch.isfinite(torch.logsumexp(log_p, dim=1)).all()


def test_the_learner_reports_what_its_discriminant_rejected(small_config):
    learner = _learner(small_config, method=FLAT_METHOD)
    learner.observe(torch.randn(40, 6), ["a", "b"] * 20)
    learner.observe(torch.full((2, 6), 1e20), ["a", "b"])
    assert learner.stats().discriminant_rejected == 2
    restored = HierarchicalLearner.from_state_dict(learner.state_dict())
    assert restored.stats().discriminant_rejected == 2


def test_on_unit_rows_an_absurd_event_is_one_more_direction_and_predictions_stay_finite(small_config):
    learner = _learner(small_config)
    learner.observe(torch.full((2, 6), 1e20), ["a", "b"])
    assert learner.stats().discriminant_rejected == 0
    assert torch.isfinite(learner.expert.model.sums).all()
    assert all(torch.isfinite(p).all() for p in learner.predict_proba(torch.randn(3, 6)))


def test_normalised_rows_have_unit_length_even_from_the_largest_floats_and_a_zero_row_stays_zero():
    projection = Projection(3, seed=0, normalise=True)
    rows = projection(torch.tensor([[3.0, 4.0, 0.0], [3e38, -3e38, 3e38], [0.0, 0.0, 0.0]]))
    assert torch.allclose(rows[0], torch.tensor([0.6, 0.8, 0.0]))
    assert torch.allclose(rows[1], torch.tensor([1.0, -1.0, 1.0]) / math.sqrt(3))
    assert torch.equal(rows[2], torch.zeros(3))


def test_along_the_tree_a_class_scores_its_parents_probability_times_its_share_among_its_known_siblings():
    # level 1: a, b (global 0, 1); level 2: a/x, a/y, a/w (unknown), b/z (unknown, an only child)
    known = torch.tensor([True, True, True, True, False, False])
    biases = torch.tensor([0.0, math.log(3), 0.0, math.log(2), 5.0, 5.0], dtype=torch.float64)
    levels = [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])]
    parents = [torch.empty(0, dtype=torch.long), torch.tensor([0, 0, 0, 1])]
    tree = LinearDiscriminant(torch.zeros(6, 1, dtype=torch.float64), biases, known, levels, Projection(1, 0), parents)
    coarse, fine = (level[0].exp() for level in tree.log_probabilities(torch.zeros(1, 1)))
    assert torch.allclose(coarse, torch.tensor([0.25, 0.75]))
    # a/x and a/y split a's 1/4 as 1 : 2; the unknown a/w gets the uniform share of a's two known
    # children; b/z has no known sibling and takes all of b
    assert torch.allclose(fine, torch.tensor([0.25 / 3, 0.25 * 2 / 3, 0.25 / 2, 0.75]))
    flat = LinearDiscriminant(torch.zeros(6, 1, dtype=torch.float64), biases, known, levels, Projection(1, 0))
    assert torch.allclose(flat.log_probabilities(torch.zeros(1, 1))[1][0].exp()[:2], torch.tensor([1 / 3, 2 / 3]))


def test_a_snapshot_from_before_normalised_rows_and_tree_scores_reads_as_flat_and_raw(small_config):
    state = _learner(small_config).predictor().state_dict()
    discriminant_state = dict(state["discriminant"])
    del discriminant_state["normalise"], discriminant_state["parents"]
    old = LinearDiscriminant.from_state_dict(discriminant_state)
    assert old.features.normalise is False and old.parents is None
