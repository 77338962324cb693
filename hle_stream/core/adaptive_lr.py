"""CLIB's adaptive learning rate: try a high and a slightly lower rate in turns, move both.

Each importance update reports how much the memory loss fell. Rates alternate every
``period`` reports; after ``length`` periods under each, a one-sided Welch t-test decides:
if the lower rate is significantly better both rates shrink by ``step``, if significantly
worse both grow by ``1/step``. The histories are then cleared and collected afresh
(the single-depth reading of the released code). With ``sliding`` (the released multi-depth
code), the test is repeated at every switch over the last ``length`` periods under each
rate, and the histories are cleared only when a test was significant.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import stdtr  # scipy.stats would add 0.6 s to the daemon's start for one test


class AdaptiveLR:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        step: float = 0.95,
        period: int = 10,
        length: int = 10,
        significance: float = 0.05,
        sliding: bool = False,
    ) -> None:
        self.optimizer = optimizer
        self.high = base_lr
        self.step = step
        self.period = period
        self.length = length
        self.significance = significance
        self.sliding = sliding
        self.using_low = False
        self._current: list[float] = []
        self._history: dict[bool, list[float]] = {False: [], True: []}
        self._apply()

    @property
    def lr(self) -> float:
        return self.high * self.step if self.using_low else self.high

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def state_dict(self) -> dict:
        return {"high": self.high, "using_low": self.using_low, "current": list(self._current),
                "low_history": list(self._history[True]), "high_history": list(self._history[False])}

    def load_state_dict(self, state: dict) -> None:
        self.high, self.using_low, self._current = state["high"], state["using_low"], list(state["current"])
        self._history = {True: list(state["low_history"]), False: list(state["high_history"])}
        self._apply()

    def report(self, loss_decrease: float) -> None:
        self._current.append(loss_decrease)
        if len(self._current) < self.period:
            return
        self._history[self.using_low].append(float(np.mean(self._current)))
        self._current.clear()
        self.using_low = not self.using_low
        low, high = self._history[True], self._history[False]
        if len(low) >= self.length and len(high) >= self.length:
            del low[: -self.length], high[: -self.length]
            p = welch_p_greater(low, high)
            significant = p < self.significance or p > 1 - self.significance
            if p < self.significance:
                self.high *= self.step
            elif p > 1 - self.significance:
                self.high /= self.step
            if significant or not self.sliding:
                low.clear()
                high.clear()
        self._apply()


def welch_p_greater(a: list[float], b: list[float]) -> float:
    """One-sided p-value of Welch's t-test that ``a``'s mean is greater than ``b``'s
    (``scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater")``); 0.5 when both
    samples are constant and equal, as the test is then undecided."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    spread = va + vb
    difference = float(np.mean(a) - np.mean(b))
    if spread == 0:
        return 0.5 if difference == 0 else float(difference < 0)
    t = difference / np.sqrt(spread)
    df = spread ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(stdtr(df, -t))
