"""The memory part: which slot an incoming sample takes (reservoir sampling for ER, PL-FMS's balanced
eviction) and, for PL-FMS, how the memory's samples are scored."""

from __future__ import annotations

from typing import Any, Callable

import torch

from hle_stream.core.importance import ImportanceTracker
from hle_stream.core.losses import per_sample_loss
from hle_stream.core.memory import ReplayMemory
from hle_stream.core.supervision import merge_pseudo
from hle_stream.core.tree_tables import TreeTables

SCORING_CHUNK = 512  # memory slots per forward pass when scoring importance


def reservoir_slot(memory: ReplayMemory, seen: int, generator: torch.Generator) -> int | None:
    """Reservoir sampling: the ``seen``-th sample (1-based) enters with probability capacity/seen.

    Returns the slot to overwrite, or ``None`` when the sample is not kept.
    """
    if not memory.full:
        return memory.size
    j = int(torch.randint(seen, (1,), generator=generator))
    return j if j < memory.capacity else None


def balanced_importance_slot(
    memory: ReplayMemory, incoming_bin: int, num_bins: int, include_pseudo: bool = False
) -> int:
    """PL-FMS eviction: the new sample always enters.

    When the memory is full, count samples per (level, class) bin, add the incoming sample to
    its bin, take the fullest bin (ties: the earliest-seen class) and give its least important
    slot to the newcomer. With ``include_pseudo`` pseudo-labels count in the histogram (see
    ``ReplayMemory.bin_counts``), but the victim is always a sample truly labelled with the
    fullest class: evicting pseudo members instead was measured to strip the memory down to
    the newest level (497 of 500 slots on Fashion-MNIST multi-depth), forgetting level 1.
    """
    if not memory.full:
        return memory.size
    counts = memory.bin_counts(num_bins, include_pseudo)
    counts[incoming_bin] += 1
    if include_pseudo:
        has_true_member = memory.bin_counts(num_bins) > 0
        counts = counts.masked_fill(~has_true_member, float("-inf"))
    fullest = int(torch.argmax(counts))
    candidates = memory.members(fullest)
    if candidates.numel() == 0:  # the incoming sample's own, still empty bin cannot be fullest
        candidates = torch.arange(memory.size, device=memory.device)
    return int(candidates[torch.argmin(memory.importance[candidates])])


def initial_importance(memory: ReplayMemory, bin_id: int) -> float:
    """A newcomer starts at its class's mean importance, else the memory's mean, else 0."""
    if memory.size == 0:
        return 0.0
    members = memory.members(bin_id)
    scores = memory.importance[members] if members.numel() else memory.importance[: memory.size]
    return float(scores.mean())


class ReservoirPolicy:
    """ER's memory part: a uniform reservoir; nothing is scored."""

    def __init__(self, insert_before_training: bool) -> None:
        self.insert_before_training = insert_before_training

    def place(self, memory: ReplayMemory, bin_id: int, total_classes: int, offered: int,
              generator: torch.Generator) -> tuple[int | None, float]:
        """The slot the ``offered``-th sample takes (``None``: not kept) and its starting importance."""
        return reservoir_slot(memory, offered, generator), 0.0

    def record_use(self, slots: torch.Tensor) -> bool:
        """A step replayed ``slots``; True when an importance scoring is due."""
        return False

    def reorder(self, order: torch.Tensor) -> None:
        """The memory dropped slots (``ReplayMemory.remove``); nothing to follow."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class BalancedImportancePolicy:
    """PL-FMS's memory part: balanced eviction of the least important sample of the fullest
    class, CLIB-style importance scored every ``period`` steps, and (``pseudo_labels``) confident
    predictions below a sample's labelled level, assigned when it is scored."""

    def __init__(self, capacity: int, period: int, ema: float, probe: int | None, rule: str, pseudo_labels: bool,
                 pseudo_threshold: float, insert_before_training: bool) -> None:
        self.importance = ImportanceTracker(capacity, period, ema, probe, rule)
        self.pseudo_labels = pseudo_labels
        self.pseudo_threshold = pseudo_threshold
        self.insert_before_training = insert_before_training

    def place(self, memory: ReplayMemory, bin_id: int, total_classes: int, offered: int,
              generator: torch.Generator) -> tuple[int | None, float]:
        slot = balanced_importance_slot(memory, bin_id, total_classes, self.pseudo_labels)
        return slot, initial_importance(memory, bin_id)

    def record_use(self, slots: torch.Tensor) -> bool:
        self.importance.record_use(slots)
        return self.importance.due

    def reorder(self, order: torch.Tensor) -> None:
        self.importance.reorder(order)

    @torch.no_grad()
    def rescore(self, memory: ReplayMemory, generator: torch.Generator, logits_of: Callable[[torch.Tensor], list],
                targets_of: Callable[[torch.Tensor], torch.Tensor], tables: TreeTables) -> float | None:
        """Score the slots the importance rule asks for (``logits_of``: the network's logits of
        memory slots, in eval mode; ``targets_of``: what replaying them teaches), refresh their
        pseudo-labels if enabled; returns the memory loss's change (``None``: no baseline yet)."""
        slots = self.importance.slots_to_score(memory.size, generator)
        losses = torch.empty(slots.numel(), device=memory.device)
        for start in range(0, slots.numel(), SCORING_CHUNK):
            chunk = slots[start:start + SCORING_CHUNK]
            logits = logits_of(chunk)
            supervised = targets_of(chunk)
            targets, weights = supervised, None
            if self.pseudo_labels:
                targets, weights = merge_pseudo(supervised, memory.pseudo[chunk], 1.0)
            losses[start:start + chunk.numel()] = per_sample_loss(logits, targets, weights=weights)
            if self.pseudo_labels:
                self._assign_pseudo_labels(memory, chunk, logits, supervised, tables)
        return self.importance.update(memory, slots, losses.cpu())  # the scoring's one host sync

    def _assign_pseudo_labels(self, memory: ReplayMemory, slots: torch.Tensor, logits: list[torch.Tensor],
                              supervised: torch.Tensor, tables: TreeTables) -> None:
        """Confident predictions below a memory sample's labelled level, among its class's
        descendants only.

        Coarser levels are never pseudo-labelled: the label path names them, and counting a
        fine sample in a coarse bin would make the coarse bins the fullest for good, so that
        eviction would strip the memory down to the newest level.
        """
        own_level = memory.level[slots]
        own_class = memory.targets[slots].gather(1, (own_level - 1)[:, None]).squeeze(1)
        for h, level_logits in enumerate(logits):
            foreign = torch.zeros(level_logits.shape, dtype=torch.bool)
            for labelled in range(1, h + 1):  # samples labelled at a coarser level than h+1
                ancestors = tables.ancestors(h + 1, labelled)
                foreign |= (own_level == labelled)[:, None] & (ancestors[None, :] != own_class[:, None])
            scores = level_logits.float().masked_fill(foreign.to(level_logits.device, non_blocking=True), float("-inf"))
            confidence, prediction = (part.cpu() for part in torch.softmax(scores, dim=1).max(dim=1))
            eligible = (own_level <= h) & (supervised[:, h] < 0) & (confidence >= self.pseudo_threshold)
            memory.pseudo[slots, h] = torch.where(eligible, prediction, -1)
            global_ids = tables.global_ids(h + 1)[prediction]
            memory.pseudo_bins[slots, h] = torch.where(eligible, global_ids, -1)

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance.load_state_dict(state["importance"])
