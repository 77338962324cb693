"""Which slot an incoming sample takes: reservoir sampling (ER) or PL-FMS's balanced eviction."""

from __future__ import annotations

import torch

from hle_stream.core.memory import ReplayMemory


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
