"""CLIB-style sample importance: credit the replayed samples with the change of memory loss.

Every ``period`` training steps memory slots are scored. ``delta`` is the mean change of
per-sample loss over the scored slots that were also scored last time and not replaced
since. A sample's score grows when training on it went with a falling memory loss; PL-FMS
evicts the lowest-scored sample of the fullest class. Two rules move the scores:

- ``ema`` (ours): each slot replayed since the last scoring moves, once per use, toward
  ``-delta`` by an EMA of ratio ``ema``: ``s <- ema * s + (1 - ema) * (-delta)``.
- ``released`` (the released PL-FMS code, read in its effect): the losses are truncated to
  integers before they are differenced (the code stores them in an integer array), and each
  *distinct* slot used since the last scoring, however often, moves by
  ``-(1 - ema) * (delta - mean(s[used]) / n_used)``: in effect a running sum of
  ``-0.1 * delta`` with almost no pull toward the mean, since ``n_used`` is in the hundreds.

The reference rule scores the whole memory each time, which costs more forward passes than
the training itself (500 samples every 8 steps of 16). With ``probe_size`` only a bounded
random subset is scored; three quarters of it are carried over from the last scoring, so
most scored slots have a baseline loss and delta stays a paired difference. The quarter that
rotates lets every slot be probed (and pseudo-labelled) in turn.
"""

from __future__ import annotations

import torch

from hle_stream.core.memory import ReplayMemory

CARRIED_SHARE = 0.75
"""Share of the probe kept from one scoring to the next (the pairs delta is measured on)."""


class ImportanceTracker:
    """Counts memory uses between scorings, picks the slots to score, applies the rule."""

    def __init__(
        self, capacity: int, period: int, ema: float = 0.9, probe_size: int | None = None, rule: str = "ema",
    ) -> None:
        if rule not in ("ema", "released"):
            raise ValueError(f"unknown importance rule {rule!r}; choose ema or released")
        self.period = period
        self.ema = ema
        self.rule = rule
        self.probe_size = probe_size
        self.uses = torch.zeros(capacity)  # on the host, like the memory's bookkeeping
        self.probe = torch.empty(0, dtype=torch.long)  # slots scored last time (CPU)
        self.steps_since_update = 0

    def state_dict(self) -> dict:
        return {"uses": self.uses.cpu(), "steps": self.steps_since_update, "probe": self.probe}

    def load_state_dict(self, state: dict) -> None:
        self.uses.copy_(state["uses"])
        self.steps_since_update = state["steps"]
        self.probe = state.get("probe", torch.empty(0, dtype=torch.long))  # absent before probes existed

    def reorder(self, order: torch.Tensor) -> None:
        """Follow the memory after ``ReplayMemory.remove`` (``order``: old slot of each kept
        slot); the last probe no longer names the same samples and is forgotten."""
        self.uses[: order.numel()] = self.uses[order].clone()
        self.probe = torch.empty(0, dtype=torch.long)

    def record_use(self, slots: torch.Tensor) -> None:
        self.uses.index_add_(0, slots, torch.ones_like(slots, dtype=self.uses.dtype))
        self.steps_since_update += 1

    @property
    def due(self) -> bool:
        return self.steps_since_update >= self.period

    def slots_to_score(self, memory_size: int, generator: torch.Generator) -> torch.Tensor:
        """All used slots (the reference rule), or a probe of at most ``probe_size`` slots."""
        if self.probe_size is None or self.probe_size >= memory_size:
            self.probe = torch.arange(memory_size)
            return self.probe
        carried = self.probe[self.probe < memory_size]
        keep = min(carried.numel(), int(self.probe_size * CARRIED_SHARE))
        carried = carried[torch.randperm(carried.numel(), generator=generator)[:keep]]
        outside = torch.ones(memory_size, dtype=torch.bool)
        outside[carried] = False
        others = outside.nonzero().flatten()
        fill = others[torch.randperm(others.numel(), generator=generator)[: self.probe_size - keep]]
        self.probe = torch.cat([carried, fill])
        return self.probe

    def update(self, memory: ReplayMemory, slots: torch.Tensor, losses: torch.Tensor) -> float | None:
        """Apply the rule with ``losses`` of ``slots`` (now, on the host); returns delta if defined."""
        n = memory.size
        if self.rule == "released":
            losses = losses.trunc()
        paired = ~memory.fresh[slots]
        delta = None
        if bool(paired.any()):
            delta = float((losses[paired] - memory.last_loss[slots][paired]).mean())
            if self.rule == "released":
                self._released_update(memory.importance[:n], delta)
            else:
                decay = self.ema ** self.uses[:n]
                memory.importance[:n] = decay * memory.importance[:n] + (1 - decay) * (-delta)
        memory.fresh[:n] = True  # only the slots scored now hold a baseline for next time
        memory.last_loss[slots] = losses
        memory.fresh[slots] = False
        self.uses.zero_()
        self.steps_since_update = 0
        return delta

    def _released_update(self, scores: torch.Tensor, delta: float) -> None:
        used = self.uses[: scores.numel()] > 0
        n_used = int(used.sum())
        if n_used:
            scores[used] -= (1 - self.ema) * (delta - scores[used].mean() / n_used)
