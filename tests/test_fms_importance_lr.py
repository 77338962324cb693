import math

import torch

from hle_stream.core.adaptive_lr import AdaptiveLR
from hle_stream.core.importance import ImportanceTracker
from hle_stream.core.memory import ReplayMemory
from hle_stream.core.sampling import MIN_RUNNING_HORIZON, fms_horizon, fms_keep_probability


def test_fms_probability_matches_the_formula():
    t, K, Z = 5000, 12, 60_000
    first_seen = torch.tensor([0, 4000, 4900, 5000])
    expected = [min(1.0, (t - tc) * K / Z) for tc in first_seen.tolist()]
    assert torch.allclose(fms_keep_probability(t, first_seen, K, Z), torch.tensor(expected))
    assert expected == [1.0, 0.2, 0.02, 0.0]


def test_fms_horizon_is_the_configured_length_or_a_running_estimate():
    assert fms_horizon(1234, seen=99) == 1234.0
    assert fms_horizon(None, seen=5) == MIN_RUNNING_HORIZON
    assert fms_horizon(None, seen=50_000) == 50_000.0


def test_importance_moves_used_slots_toward_minus_loss_change():
    memory = ReplayMemory(3, (1,), torch.float32, 2, torch.device("cpu"))
    for slot in range(3):
        memory.write(slot, torch.zeros(1), torch.tensor([0, -1]), 1, 0, slot, 0.0)
    tracker = ImportanceTracker(3, torch.device("cpu"), period=2, ema=0.9)
    tracker.update(memory, torch.arange(3), torch.tensor([1.0, 1.0, 1.0]))  # first scoring: no old slots, no delta
    assert torch.count_nonzero(memory.importance) == 0
    tracker.record_use(torch.tensor([0, 0]))
    tracker.record_use(torch.tensor([1]))
    assert tracker.due
    delta = tracker.update(memory, torch.arange(3), torch.tensor([0.5, 0.7, 0.9]))  # loss fell by 0.3 on average
    assert math.isclose(delta, -0.3, rel_tol=1e-6)
    # slot 0 used twice: 1 - 0.9^2 = 0.19 of the way to +0.3; slot 1 once: 0.1; slot 2 unused.
    assert torch.allclose(memory.importance, torch.tensor([0.19 * 0.3, 0.1 * 0.3, 0.0]))
    assert not tracker.due


def test_replaced_slots_do_not_enter_the_loss_change():
    memory = ReplayMemory(2, (1,), torch.float32, 2, torch.device("cpu"))
    for slot in range(2):
        memory.write(slot, torch.zeros(1), torch.tensor([0, -1]), 1, 0, slot, 0.0)
    tracker = ImportanceTracker(2, torch.device("cpu"), period=1)
    tracker.update(memory, torch.arange(2), torch.tensor([1.0, 1.0]))
    memory.write(1, torch.zeros(1), torch.tensor([0, -1]), 1, 0, 9, 0.0)  # fresh sample
    assert math.isclose(tracker.update(memory, torch.arange(2), torch.tensor([2.0, 50.0])), 1.0)


def test_probe_keeps_three_quarters_and_pairs_only_slots_scored_last_time():
    memory = ReplayMemory(100, (1,), torch.float32, 2, torch.device("cpu"))
    for slot in range(100):
        memory.write(slot, torch.zeros(1), torch.tensor([0, -1]), 1, 0, slot, 0.0)
    tracker = ImportanceTracker(100, torch.device("cpu"), period=1, probe_size=20)
    generator = torch.Generator().manual_seed(0)
    first = tracker.slots_to_score(100, generator)
    assert first.numel() == 20 and first.unique().numel() == 20
    assert tracker.update(memory, first, torch.ones(20)) is None  # no baseline yet
    second = tracker.slots_to_score(100, generator)
    carried = torch.isin(second, first)
    assert second.unique().numel() == 20 and int(carried.sum()) == 15
    # only the 15 carried slots have a baseline: their loss fell by 0.5, the rest is ignored
    losses = torch.where(carried, 0.5, 100.0)
    assert math.isclose(tracker.update(memory, second, losses), -0.5)
    assert bool(memory.fresh[~torch.isin(torch.arange(100), second)].all())


def test_probe_covers_a_memory_smaller_than_itself_whole():
    tracker = ImportanceTracker(100, torch.device("cpu"), period=1, probe_size=64)
    assert torch.equal(tracker.slots_to_score(30, torch.Generator()), torch.arange(30))


def test_adaptive_lr_lowers_both_rates_when_the_lower_one_wins():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    lr = AdaptiveLR(opt, 1.0, step=0.5, period=1, length=3)
    for i in range(6):  # alternate high (worse decrease) and low (better decrease)
        lr.report(0.1 + 0.001 * i if not lr.using_low else 1.0 + 0.001 * i)
    assert lr.high == 0.5
    assert opt.param_groups[0]["lr"] == lr.lr
