"""The released baselines' learning-rate schedule ("exp_reset"), for a faithful ER.

The released ER multiplies the learning rate by ``gamma`` (0.9999) after every step and
resets it to the base rate whenever a new class appears: over a long task the rate falls to
a few percent of the base, so a new class is learned fast and old ones are then disturbed
less. hle-stream's own ER keeps the rate constant, the stronger baseline; ``er-paper`` runs
this schedule so the paper's comparison can be reproduced.
"""

from __future__ import annotations

import torch

from hle_stream.core.adaptive_lr import AdaptiveLR


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


class LearningRate:
    """The learning-rate part: CLIB's adaptive rate (moved by the memory loss's changes), the
    released baselines' decay-and-reset, or a constant rate; the learner calls its hooks."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, adaptive: bool, adaptive_period: int,
                 adaptive_sliding: bool, exp_reset_gamma: float | None) -> None:
        self.adaptive = AdaptiveLR(optimizer, base_lr, period=adaptive_period, sliding=adaptive_sliding) \
            if adaptive else None
        self.exp_reset = ExpResetLR(optimizer, base_lr, exp_reset_gamma) if exp_reset_gamma is not None else None

    def new_class(self) -> None:
        if self.exp_reset is not None:
            self.exp_reset.new_class()

    def stepped(self) -> None:
        if self.exp_reset is not None:
            self.exp_reset.stepped()

    def memory_loss_changed(self, delta: float | None) -> None:
        """An importance scoring's change of the memory loss (``None``: nothing to compare yet)."""
        if self.adaptive is not None and delta is not None:
            self.adaptive.report(-delta)

    def state_dict(self) -> dict:
        parts = {"adaptive_lr": self.adaptive, "exp_reset": self.exp_reset}
        return {key: part.state_dict() for key, part in parts.items() if part is not None}

    def load_state_dict(self, state: dict) -> None:
        if self.adaptive is not None:
            self.adaptive.load_state_dict(state["adaptive_lr"])
        if self.exp_reset is not None:
            self.exp_reset.load_state_dict(state["exp_reset"])
