import pytest
import torch

from hle_stream.core.hierarchy import LabelPathError
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import all_names, resolve_name
from hle_stream.eval.datasets.synthetic import make_synthetic
from hle_stream.eval.streams import build_stream


def _stream(seed=0):
    ds = make_synthetic(branching=(2, 2), dim=8, train_per_leaf=60, test_per_leaf=20, noise=0.5, seed=seed)
    stream = build_stream(ds.labels_train, "multi-depth", seed)
    return ds, torch.from_numpy(ds.x_train[stream.indices]), list(stream.labels)


def _learn(config, x, labels, chunk=5):
    learner = HierarchicalLearner(config, (x.shape[1],), x.dtype)
    for start in range(0, len(labels), chunk):
        learner.observe(x[start:start + chunk], labels[start:start + chunk], ids=list(range(start, start + chunk)))
    return learner


@pytest.mark.parametrize("method", all_names())
def test_every_method_learns_every_level_well_above_chance(small_config, method):
    ds, x, labels = _stream()
    learner = _learn(resolve_name(method, small_config.with_(memory_size=40)), x, labels)
    predictions = learner.predict(torch.from_numpy(ds.x_test))
    for level, chance in ((1, 0.5), (2, 0.25)):
        truth = torch.tensor([learner.tree.locate("/".join(p.split("/")[:level]))[1] for p in ds.labels_test])
        accuracy = (predictions[level - 1] == truth).float().mean().item()
        assert accuracy > chance + 0.3, (method, level, accuracy)


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(small_config):
    _, x, labels = _stream()
    config = resolve_name("pl-fms", small_config)
    a, b = _learn(config, x, labels), _learn(config, x, labels)
    c = _learn(config.with_(seed=1), x, labels)
    probe = x[:20]
    assert all(torch.equal(p, q) for p, q in zip(a.predict_proba(probe), b.predict_proba(probe)))
    assert torch.equal(a.memory.sample_id, b.memory.sample_id)
    assert not torch.equal(a.predict_proba(probe)[1], c.predict_proba(probe)[1])


def test_pl_fms_inserts_a_sample_before_training_on_it_and_er_after(small_config):
    x = torch.randn(3, 4)
    pl_fms = HierarchicalLearner(resolve_name("pl-fms", small_config), (4,), torch.float32)
    pl_fms.observe(x, ["a", "b", "a/c"], ids=[7, 8, 9])  # 3 < batch_size // 2: not trained yet
    assert pl_fms.steps == 0 and pl_fms.memory.sample_id[:3].tolist() == [7, 8, 9]
    er = HierarchicalLearner(resolve_name("er", small_config), (4,), torch.float32)
    er.observe(x, ["a", "b", "a/c"], ids=[7, 8, 9])
    assert er.memory.size == 0
    er.observe(torch.randn(1, 4), ["b"], ids=[10])  # the 4th sample completes the batch
    assert er.steps == 4 and er.memory.size == 4


def test_full_memory_stays_balanced_over_level_class_bins(small_config):
    _, x, labels = _stream()
    learner = _learn(resolve_name("pl-fms", small_config.with_(memory_size=35)), x, labels)
    counts = torch.bincount(learner.memory.bin, minlength=learner.tree.total_classes)
    assert learner.memory.full and counts.max() - counts.min() <= 1  # 7 bins, 35 slots: 5 each


def test_a_malformed_label_rejects_the_whole_batch_before_learning(small_config):
    learner = HierarchicalLearner(small_config, (4,), torch.float32)
    with pytest.raises(LabelPathError):
        learner.observe(torch.randn(2, 4), ["a/b", "a//b"])
    assert learner.seen == 0 and learner.tree.total_classes == 0


def test_pseudo_labels_are_confident_descendants_of_the_known_class(small_config):
    _, x, labels = _stream()
    config = resolve_name("pl-fms-pl", small_config.with_(memory_size=40, pseudo_threshold=0.6))
    learner = _learn(config, x, labels)
    mem, tree = learner.memory, learner.tree
    coarse_rows = (mem.level[: mem.size] == 1).nonzero().flatten()
    labelled = [r for r in coarse_rows.tolist() if mem.pseudo[r, 1] >= 0]
    assert labelled, "expected some coarse memory samples to get a fine pseudo-label"
    for r in labelled:
        fine = tree.path_of(2, int(mem.pseudo[r, 1]))
        assert fine.split("/")[0] == tree.path_of(1, int(mem.targets[r, 0]))
        assert int(mem.pseudo_bins[r, 1]) == tree.global_id(fine)
    # only levels below the label are pseudo-labelled
    fine_rows = mem.level[: mem.size] == 2
    assert (mem.pseudo[: mem.size][fine_rows] == -1).all()
    assert (mem.pseudo[: mem.size, 0] == -1).all()


def test_path_decoding_ranks_fine_classes_by_their_whole_path(small_config):
    _, x, labels = _stream()
    learner = _learn(resolve_name("pl-fms-path", small_config), x, labels)
    coarse, fine = learner.predict(x[:200])
    parents = torch.tensor(learner.tree.ancestor_table(2, 1))
    agreement = (parents[fine] == coarse).float().mean().item()
    assert agreement > 0.95



def test_a_non_finite_step_is_skipped_its_samples_are_quarantined_and_the_weights_stay_finite(small_config):
    ds, x, labels = _stream()
    learner = _learn(small_config, x[:40], labels[:40])
    poison = torch.full((4, x.shape[1]), 1e30)  # finite, but its activations overflow
    learner.observe(poison, labels[:4], ids=[9001, 9002, 9003, 9004])
    assert learner.nonfinite_steps >= 1 and learner.quarantined >= 4
    assert all(bool(torch.isfinite(p).all()) for p in learner.net.parameters())
    memory = learner.memory
    assert not torch.isin(memory.sample_id[: memory.size], torch.tensor([9001, 9002, 9003, 9004])).any()
    assert float(memory.x[: memory.size].abs().max()) < 1e6
    steps = learner.steps
    learner.observe(x[40:80], labels[40:80])  # and learning goes on
    assert learner.steps > steps and all(bool(torch.isfinite(p).all()) for p in learner.net.parameters())


def test_a_skipped_step_leaves_weights_and_optimizer_state_exactly_as_they_were(small_config):
    _, x, labels = _stream()
    learner = _learn(resolve_name("er", small_config), x[:40], labels[:40])  # every step trains on every stream row
    weights = [p.detach().clone() for p in learner.net.parameters()]
    moments = [{k: v.clone() for k, v in state.items()} for state in learner.optimizer.state.values()]
    steps = learner.steps
    learner.observe(torch.full((4, x.shape[1]), 1e30), labels[:4], ids=[9001, 9002, 9003, 9004])
    assert learner.steps == steps and learner.nonfinite_steps == 4  # one stream batch: 4 steps, all skipped
    assert all(torch.equal(p, q) for p, q in zip(learner.net.parameters(), weights))
    for state, before in zip(learner.optimizer.state.values(), moments):
        assert all(torch.equal(state[k], v) for k, v in before.items())
    # ER remembers a batch after training on it: the poison never entered; the 4 slots the first
    # skipped step replayed are quarantined, those of the later skips (same culprit) are kept
    assert learner.quarantined == 4 and learner.memory.size == 16 - 4
    assert not torch.isin(learner.memory.sample_id, torch.tensor([9001, 9002, 9003, 9004])).any()


def test_a_replayed_sample_teaches_its_ancestors_at_the_configured_weight(small_config):
    learner = HierarchicalLearner(resolve_name("pl-fms-ancestor-hint", small_config), (4,), torch.float32)
    learner.observe(torch.randn(3, 4), ["a", "a/b", "a/b/c"], ids=[1, 2, 3])  # remembered, not trained yet
    learner.memory.first_level[2] = 2  # "a/b/c" refined from "a/b": it teaches level 2 at full weight
    no_stream = torch.empty(0, learner.memory.targets.shape[1], dtype=torch.long)
    _, weights = learner.supervision.batch(no_stream, torch.empty(0, dtype=torch.long), learner.memory,
                                           torch.arange(3), lambda bins: None)
    assert torch.equal(weights[:, :3], torch.tensor([[1.0, 1.0, 1.0], [0.1, 1.0, 1.0], [0.1, 1.0, 1.0]]))


def test_a_replayed_sample_of_a_class_in_its_fms_ramp_teaches_its_own_level_only(small_config):
    config = small_config.with_(fms_horizon=10)
    x = torch.randn(11, 4)
    labels = ["a/x"] * 10 + ["b/y"]  # a/x seen from t=0; b/y first seen at t=10
    slots = torch.tensor([0, 10])  # one a/x and the b/y sample (the memory keeps all 11)
    ramped = HierarchicalLearner(resolve_name("pl-fms-replay-path-after-ramp", config), (4,), torch.float32)
    ramped.observe(x, labels, train=False)
    # at t=11 with 4 classes: a/x's stream share (11-0)*4/10 >= 1, b/y's (11-10)*4/10 = 0.4
    assert _first_levels(ramped, slots) == [1, 2]
    always = HierarchicalLearner(resolve_name("pl-fms-replay-path", config), (4,), torch.float32)
    always.observe(x, labels, train=False)
    assert _first_levels(always, slots) == [1, 1]


def _first_levels(learner: HierarchicalLearner, slots: torch.Tensor) -> list[int]:
    """The coarsest level each replayed memory slot teaches now."""
    return learner.supervision.memory_first_levels(learner.memory, slots, learner._ramp_share).tolist()


@pytest.mark.parametrize("augmentation, shape, augments", [
    ("images", (1, 8, 8), True), ("colour-images", (1, 8, 8), False), ("colour-images", (3, 8, 8), True),
    ("images", (6,), False),
])
def test_augmentation_applies_to_the_inputs_its_policy_names(small_config, augmentation, shape, augments):
    learner = HierarchicalLearner(small_config.with_(augmentation=augmentation), shape, torch.float32)
    assert learner.augmentation.crop_flip is learner.augmentation.cutmix is augments
    x = torch.rand(4, *shape)
    assert torch.equal(learner.augmentation.inputs(x), x) is not augments


def test_feature_dropout_zeroes_about_that_share_of_a_vectors_features_in_training_only(small_config):
    learner = HierarchicalLearner(small_config.with_(vector_dropout=0.5), (400,), torch.float32)
    x = torch.rand(50, 400) + 1.0  # no feature is zero before
    trained = learner.augmentation.inputs(x)
    dropped = trained == 0
    assert 0.45 < dropped.float().mean() < 0.55  # 20,000 draws: 0.5 ± 0.01 (one std 0.0035)
    torch.testing.assert_close(trained[~dropped], 2.0 * x[~dropped])  # the kept ones carry the dropped ones' share
    images = HierarchicalLearner(small_config.with_(vector_dropout=0.5, augment=False), (1, 8, 8), torch.float32)
    picture = torch.rand(4, 1, 8, 8)
    assert torch.equal(images.augmentation.inputs(picture), picture)  # vectors only
