"""CLIB-style sample importance: credit the replayed samples with the change of memory loss.

Every ``period`` training steps the whole memory is scored. ``delta`` is the mean change of
per-sample loss over the slots that were not replaced since the last scoring. Each slot that
was replayed since then moves, once per use, toward ``-delta`` by an EMA of ratio ``ema``:
``s <- ema * s + (1 - ema) * (-delta)``. A sample's score therefore grows when training on it
went with a falling memory loss; PL-FMS evicts the lowest-scored sample of the fullest class.
"""

from __future__ import annotations

import torch

from hle_stream.memory import ReplayMemory


class ImportanceTracker:
    """Counts memory uses between scorings and applies the EMA rule above."""

    def __init__(self, capacity: int, device: torch.device, period: int, ema: float = 0.9) -> None:
        self.period = period
        self.ema = ema
        self.uses = torch.zeros(capacity, device=device)
        self.steps_since_update = 0

    def record_use(self, slots: torch.Tensor) -> None:
        self.uses.index_add_(0, slots, torch.ones_like(slots, dtype=self.uses.dtype))
        self.steps_since_update += 1

    @property
    def due(self) -> bool:
        return self.steps_since_update >= self.period

    def update(self, memory: ReplayMemory, losses: torch.Tensor) -> float | None:
        """Apply the rule with ``losses`` (one per used slot, now); returns delta if defined."""
        n = memory.size
        old = ~memory.fresh[:n]
        delta = None
        if bool(old.any()):
            delta = float((losses[old] - memory.last_loss[:n][old]).mean())
            decay = self.ema ** self.uses[:n]
            memory.importance[:n] = decay * memory.importance[:n] + (1 - decay) * (-delta)
        memory.last_loss[:n] = losses
        memory.fresh[:n] = False
        self.uses.zero_()
        self.steps_since_update = 0
        return delta
