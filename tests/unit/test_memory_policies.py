import pytest
import torch

from hle_stream.core.memory import ReplayMemory
from hle_stream.core.policies import balanced_importance_slot, initial_importance, reservoir_slot


def _memory(capacity=6):
    return ReplayMemory(capacity, (2,), torch.float32, max_depth=3, device=torch.device("cpu"))


def _fill(memory, bins, scores):
    for slot, (b, s) in enumerate(zip(bins, scores)):
        memory.write(slot, torch.zeros(2), torch.tensor([b, -1, -1]), 1, b, slot, s)


def test_eviction_takes_the_least_important_sample_of_the_fullest_bin():
    memory = _memory()
    _fill(memory, bins=[0, 1, 1, 1, 2, 2], scores=[-5.0, 0.3, -0.2, 0.9, -9.0, 1.0])
    # bin 1 has 3 samples; its least important is slot 2 (score -0.2), not the global minimum.
    assert balanced_importance_slot(memory, incoming_bin=0, num_bins=3) == 2


def test_the_incoming_sample_counts_toward_its_own_bin():
    memory = _memory()
    _fill(memory, bins=[0, 0, 0, 1, 1, 1], scores=[0.0, 0.1, 0.2, 0.5, -0.5, 0.3])
    # tie 3:3 becomes 3:4 for bin 1 when the newcomer is of bin 1.
    assert balanced_importance_slot(memory, incoming_bin=1, num_bins=2) == 4
    # ties go to the earliest-seen class (lowest id).
    assert balanced_importance_slot(memory, incoming_bin=2, num_bins=3) == 0


def test_pseudo_labels_weigh_in_the_histogram_but_only_true_members_are_evicted():
    memory = _memory()
    _fill(memory, bins=[0, 0, 1, 1, 2, 2], scores=[-5.0, 0.1, 0.2, 0.3, 0.4, -1.0])
    memory.pseudo_bins[0, 1] = 2
    memory.pseudo_bins[2, 1] = 2
    # slots 0 and 2 weigh 1/2 in their own bin and 1/2 in bin 2: counts 1.5, 1.5, 3.
    assert memory.bin_counts(3, include_pseudo=True).tolist() == [1.5, 1.5, 3.0]
    # bin 2 is fullest; slot 0 (-5.0) is only a pseudo member, so slot 5 (-1.0) goes.
    assert balanced_importance_slot(memory, incoming_bin=0, num_bins=3, include_pseudo=True) == 5
    # without pseudo-labels bin 0 (2 + incoming) is fullest and slot 0 goes.
    assert balanced_importance_slot(memory, incoming_bin=0, num_bins=3, include_pseudo=False) == 0


def test_memory_appends_until_full():
    memory = _memory(3)
    assert balanced_importance_slot(memory, 0, 1) == 0
    _fill(memory, [0, 0], [0.0, 0.0])
    assert balanced_importance_slot(memory, 0, 1) == 2
    assert not memory.full


def test_a_newcomer_starts_at_its_class_mean_importance():
    memory = _memory()
    _fill(memory, bins=[0, 0, 1], scores=[1.0, 3.0, 10.0])
    assert initial_importance(memory, 0) == 2.0
    assert initial_importance(memory, 5) == pytest.approx((1.0 + 3.0 + 10.0) / 3)
    assert initial_importance(_memory(), 0) == 0.0


def test_reservoir_keeps_each_sample_with_probability_capacity_over_seen():
    memory = _memory(10)
    _fill(memory, bins=[0] * 10, scores=[0.0] * 10)
    generator = torch.Generator().manual_seed(0)
    kept = sum(reservoir_slot(memory, 100, generator) is not None for _ in range(4000))
    assert abs(kept / 4000 - 0.1) < 0.02


def test_memory_reports_its_bytes():
    memory = ReplayMemory(100, (1, 28, 28), torch.uint8, 3, torch.device("cpu"))
    assert memory.nbytes() >= 100 * 28 * 28


def test_a_relabelled_sample_changes_bin_and_is_supervised_from_its_first_level_to_its_new_one():
    from hle_stream.core.config import LearnerConfig
    from hle_stream.core.learner import HierarchicalLearner

    learner = HierarchicalLearner(LearnerConfig(memory_size=4, batch_size=4, device="cpu"), (3,), torch.float32)
    learner.observe(torch.randn(4, 3), ["a", "a", "b", "b"], ids=[10, 11, 12, 13])
    assert learner.relabel(11, "a/x/y") and not learner.relabel(99, "a/x")
    memory = learner.memory
    slot = memory.slot_of(11)
    assert (int(memory.first_level[slot]), int(memory.level[slot])) == (1, 3)
    assert int(memory.bin[slot]) == learner.tree.global_id("a/x/y")
    supervised = learner.supervision.targets(memory.targets[:4], memory.level[:4], memory.first_level[:4])
    assert (supervised[slot, :3] >= 0).all()  # a, a/x and a/x/y all taught
    others = [s for s in range(4) if s != slot]
    assert (supervised[others, 0] >= 0).all() and (supervised[others, 1:] < 0).all()  # own level only
