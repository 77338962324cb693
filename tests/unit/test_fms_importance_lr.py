import math

import numpy as np
import torch

from hle_stream.core.adaptive_lr import AdaptiveLR, welch_p_greater
from hle_stream.core.importance import ImportanceTracker
from hle_stream.core.lr_schedule import ExpResetLR
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
    tracker = ImportanceTracker(3, period=2, ema=0.9)
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
    tracker = ImportanceTracker(2, period=1)
    tracker.update(memory, torch.arange(2), torch.tensor([1.0, 1.0]))
    memory.write(1, torch.zeros(1), torch.tensor([0, -1]), 1, 0, 9, 0.0)  # fresh sample
    assert math.isclose(tracker.update(memory, torch.arange(2), torch.tensor([2.0, 50.0])), 1.0)


def test_probe_keeps_three_quarters_and_pairs_only_slots_scored_last_time():
    memory = ReplayMemory(100, (1,), torch.float32, 2, torch.device("cpu"))
    for slot in range(100):
        memory.write(slot, torch.zeros(1), torch.tensor([0, -1]), 1, 0, slot, 0.0)
    tracker = ImportanceTracker(100, period=1, probe_size=20)
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
    tracker = ImportanceTracker(100, period=1, probe_size=64)
    assert torch.equal(tracker.slots_to_score(30, torch.Generator()), torch.arange(30))


def test_adaptive_lr_lowers_both_rates_when_the_lower_one_wins():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    lr = AdaptiveLR(opt, 1.0, step=0.5, period=1, length=3)
    for i in range(6):  # alternate high (worse decrease) and low (better decrease)
        lr.report(0.1 + 0.001 * i if not lr.using_low else 1.0 + 0.001 * i)
    assert lr.high == 0.5
    assert opt.param_groups[0]["lr"] == lr.lr


def test_the_released_importance_rule_truncates_losses_and_moves_each_used_slot_once():
    memory = ReplayMemory(4, (1,), torch.float32, 2, torch.device("cpu"))
    for slot, score in enumerate([0.5, 1.0, 2.0, 0.0]):
        memory.write(slot, torch.zeros(1), torch.tensor([0, -1]), 1, 0, slot, score)
    tracker = ImportanceTracker(4, period=1, probe_size=None, rule="released")
    assert tracker.update(memory, torch.arange(4), torch.tensor([1.7, 2.2, 0.4, 3.9])) is None  # stored as 1, 2, 0, 3
    memory.write(3, torch.zeros(1), torch.tensor([0, -1]), 1, 0, 9, 0.0)  # replaced: not paired next time
    tracker.record_use(torch.tensor([0, 0, 1]))  # slot 0 twice, slot 1 once
    # now 0.9 -> 0, 2.8 -> 2, 0.2 -> 0: changes -1, 0, 0 over the paired slots 0..2
    delta = tracker.update(memory, torch.arange(4), torch.tensor([0.9, 2.8, 0.2, 3.1]))
    assert math.isclose(delta, -1 / 3, rel_tol=1e-6)
    # used slots {0, 1}: mean score 0.75, n_used 2 -> d = -1/3 - 0.375; each moves by -0.1 * d once
    step = -0.1 * (-1 / 3 - 0.75 / 2)
    assert torch.allclose(memory.importance, torch.tensor([0.5 + step, 1.0 + step, 2.0, 0.0]))


def _reports_until_the_rates_move(sliding: bool) -> tuple[list[float], list[float], int]:
    """An inconclusive start (both rates alike), then the lower rate wins clearly."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr = AdaptiveLR(opt, 1.0, step=0.5, period=1, length=3, sliding=sliding)
    for value in [1.0, 1.0, 1.01, 0.99, 0.99, 1.01]:  # high, low, high, ...: a test, not significant
        lr.report(value)
    kept = (list(lr._history[False]), list(lr._history[True]))
    for i in range(10):
        lr.report(0.001 * i if not lr.using_low else 3.0 + 0.001 * i)
        if lr.high != 1.0:
            assert lr.high == 0.5 and lr._history == {False: [], True: []}  # cleared after a significant test
            return *kept, i + 1
    raise AssertionError("the rates never moved")


def test_the_sliding_adaptive_lr_retests_at_every_switch_and_keeps_an_inconclusive_history():
    high, low, reports = _reports_until_the_rates_move(sliding=True)
    assert high == [1.0, 1.01, 0.99] and low == [1.0, 0.99, 1.01]
    assert reports == 4  # the window slid: old and new periods tested together
    high, low, reports = _reports_until_the_rates_move(sliding=False)
    assert high == low == []
    assert reports == 6  # a fresh window of 3 + 3 periods had to fill first


def test_exp_reset_decays_per_step_and_returns_to_the_base_rate_on_a_new_class():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    schedule = ExpResetLR(opt, 0.1, gamma=0.5)
    for _ in range(3):
        schedule.stepped()
    assert math.isclose(opt.param_groups[0]["lr"], 0.1 * 0.5 ** 3)
    schedule.new_class()
    assert opt.param_groups[0]["lr"] == 0.1


def test_welch_p_value_matches_scipy_stats():
    from scipy import stats

    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(0, 1, 10).tolist(), rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 3), 10).tolist()
        expected = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
        assert math.isclose(welch_p_greater(a, b), expected, rel_tol=1e-9, abs_tol=1e-12)
