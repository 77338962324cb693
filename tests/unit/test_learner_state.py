import pytest
import torch

from hle_stream.core.learner import HierarchicalLearner, IncompatibleStateError
from hle_stream.core.methods import method_config, resolve_name
from hle_stream.service.checkpoint import decode, encode


def _labels(n, offset=0):
    paths = ["a", "b", "a/x", "b/y", "a/x/1", "b/y/2", "a/z"]
    return [paths[(i + offset) % len(paths)] for i in range(n)]


def _assert_both_learn_alike(original, restored, later, probe):
    """Both learn ``later`` and then predict ``probe`` identically."""
    original.observe(later, _labels(30, 3))
    restored.observe(later, _labels(30, 3))
    for p, q in zip(original.predict_proba(probe), restored.predict_proba(probe)):
        assert torch.equal(p, q)


def _through_bytes(state):
    """The daemon's path: a checkpoint file's bytes (header, checksum, weights-only payload)."""
    return decode(encode({"learner": state}))["learner"]


@pytest.mark.parametrize(("method", "importance_probe", "shape"), [
    ("er", None, (6,)),
    ("pl-fms", None, (6,)),  # the reference rule: the whole memory is scored
    ("pl-fms", 4, (6,)),  # a bounded probe, part of it carried from one scoring to the next
    ("pl-fms-pl", 4, (6,)),
    ("pl-fms", 4, (1, 8, 8)),  # images: the small CNN, channels_last
    ("er-paper", None, (6,)),  # the exp_reset learning rate
    ("pl-fms-reference", None, (6,)),  # the released importance rule, the sliding adaptive LR
    ("pl-fms-path-ace", 4, (6,)),
    ("pl-fms-ancestor-hint-after-ramp-colour-aug-lda", 4, (6,)),  # the streaming discriminant
    ("pl-fms-ancestor-hint-after-ramp-colour-aug-lda-unit-tree", 4, (6,)),  # ... on unit rows, along the tree
    ("pl-fms-ancestor-hint-after-ramp-colour-aug-lda-unit-tree-feature-drop", 4, (6,)),  # ... vectors' dropout
])
def test_a_restored_learner_predicts_and_trains_exactly_like_one_that_never_stopped(
    small_config, method, importance_probe, shape
):
    config = resolve_name(method, small_config.with_(memory_size=12, importance_probe=importance_probe))
    torch.manual_seed(0)
    x, later = torch.randn(45, *shape), torch.randn(30, *shape)
    original = HierarchicalLearner(config, shape, torch.float32)
    original.observe(x, _labels(45))  # 45 is odd: one sample waits in the half-filled batch
    restored = HierarchicalLearner.from_state_dict(_through_bytes(original.state_dict()))

    probe = torch.randn(10, *shape)
    for p, q in zip(original.predict_proba(probe), restored.predict_proba(probe)):
        assert torch.equal(p, q)
    _assert_both_learn_alike(original, restored, later, probe)
    assert torch.equal(original.memory.importance, restored.memory.importance)
    assert torch.equal(original.memory.fresh, restored.memory.fresh)
    if hasattr(original.policy, "importance"):
        assert torch.equal(original.policy.importance.probe, restored.policy.importance.probe)
    assert restored.tree.state_dict() == original.tree.state_dict()
    assert original.optimizer.param_groups[0]["lr"] == restored.optimizer.param_groups[0]["lr"]


def test_a_refined_memory_sample_keeps_its_first_level_through_a_checkpoint(small_config):
    learner = HierarchicalLearner(small_config.with_(memory_size=12), (6,), torch.float32)
    learner.observe(torch.randn(8, 6), ["a", "b"] * 4, ids=list(range(8)))
    assert learner.relabel(0, "a/x")
    restored = HierarchicalLearner.from_state_dict(_through_bytes(learner.state_dict()))
    assert torch.equal(restored.memory.first_level, learner.memory.first_level)
    slot = restored.memory.slot_of(0)
    assert (int(restored.memory.first_level[slot]), int(restored.memory.level[slot])) == (1, 2)
    older = learner.state_dict()
    del older["memory"]["first_level"]  # a checkpoint written before refinements existed
    size = learner.memory.size
    assert torch.equal(HierarchicalLearner.from_state_dict(older).memory.first_level[:size], learner.memory.level[:size])


def test_a_state_of_another_format_is_refused(small_config):
    state = HierarchicalLearner(small_config, (3,), torch.float32).state_dict()
    state["format_version"] = 999
    with pytest.raises(IncompatibleStateError, match="format 999"):
        HierarchicalLearner.from_state_dict(state)


def test_a_state_saved_with_a_parameter_group_per_head_still_restores_exactly(small_config):
    torch.manual_seed(0)
    x, later, probe = torch.randn(45, 6), torch.randn(30, 6), torch.randn(10, 6)
    original = HierarchicalLearner(small_config, (6,), torch.float32)
    original.observe(x, _labels(45))
    state = original.state_dict()
    # the layout written before heads joined the backbone's group: one group per head
    saved = state["optimizer"]["param_groups"][0]
    hyper = {k: v for k, v in saved.items() if k != "params"}
    backbone = len(list(original.net.backbone.parameters()))
    ids = saved["params"]
    state["optimizer"]["param_groups"] = [{**hyper, "params": ids[:backbone]}] + [
        {**hyper, "params": ids[i:i + 2]} for i in range(backbone, len(ids), 2)]
    assert len(state["optimizer"]["param_groups"]) == 1 + len(original.net.heads)

    restored = HierarchicalLearner.from_state_dict(_through_bytes(state))
    assert len(restored.optimizer.param_groups) == 1
    _assert_both_learn_alike(original, restored, later, probe)


def test_the_learner_draws_only_from_its_own_generators(small_config):
    """Two learners with one seed are identical whatever the process's RNG does in between, and
    neither creating, training nor restoring a learner moves torch's global RNG."""
    x = torch.randn(40, 6)
    before = torch.get_rng_state()
    first = HierarchicalLearner(small_config, (6,), torch.float32)
    first.observe(x, _labels(40))
    HierarchicalLearner.from_state_dict(first.state_dict())
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(1000)  # someone else in the process draws
    second = HierarchicalLearner(small_config, (6,), torch.float32)
    second.observe(x, _labels(40))
    for p, q in zip(first.predict_proba(x), second.predict_proba(x)):
        assert torch.equal(p, q)


def _tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize(("method", "options"), [
    ("pl-fms", dict(pseudo_labels=True)),  # the balanced memory with importance and pseudo-labels, adaptive LR
    ("hle", {}),  # supervision, augmentation, sampler and the discriminant expert
    ("er-paper", {}),  # the reservoir memory and the decaying learning rate
])
def test_every_part_of_the_learner_keeps_its_state_through_a_checkpoint(small_config, method, options):
    config = method_config(method, small_config.with_(memory_size=12, importance_probe=4), options)
    torch.manual_seed(0)
    original = HierarchicalLearner(config, (6,), torch.float32)
    original.observe(torch.randn(45, 6), _labels(45))
    restored = HierarchicalLearner.from_state_dict(_through_bytes(original.state_dict()))
    for part in ("policy", "lr_schedule", "expert"):
        saved = getattr(original, part).state_dict()
        assert _tensors_equal(saved, getattr(restored, part).state_dict()), part
    assert any(getattr(original, part).state_dict() for part in ("policy", "lr_schedule", "expert"))
    assert restored.sampler.updates == original.sampler.updates
