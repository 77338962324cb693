"""The released baselines' learning-rate schedule ("exp_reset"), for a faithful ER.

The released ER multiplies the learning rate by ``gamma`` (0.9999) after every step and
resets it to the base rate whenever a new class appears: over a long task the rate falls to
a few percent of the base, so a new class is learned fast and old ones are then disturbed
less. hle-stream's own ER keeps the rate constant, the stronger baseline; ``er-paper`` runs
this schedule so the paper's comparison can be reproduced.
"""

from __future__ import annotations

import torch


class ExpResetLR:
    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, gamma: float) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.gamma = gamma
        self.lr = base_lr
        self._apply()

    def stepped(self) -> None:
        """After each optimizer step."""
        self.lr *= self.gamma
        self._apply()

    def new_class(self) -> None:
        self.lr = self.base_lr
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def state_dict(self) -> dict:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]
        self._apply()
