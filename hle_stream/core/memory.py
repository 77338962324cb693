"""The replay memory: preallocated tensors, no per-sample objects.

Each slot holds one sample, its label at every level its path names (``targets``, -1 where
unknown), its own labelled level (and the coarsest level it was labelled at before a
refinement), its bin (the global id of its (level, class) pair),
optional pseudo-labels at other levels, and the bookkeeping of the importance rule.

Only the samples (``x``) live on the learner's device. Labels and bookkeeping live on the host:
eviction, batch assembly and the per-level loss's row selection read them every step, and on a
GPU each such read of a device tensor would stall the host until the device caught up. On the
CPU both homes are the same.
"""

from __future__ import annotations

from typing import Sequence

import torch


class ReplayMemory:
    """Fixed-capacity sample store. Slots ``0 .. size-1`` are in use."""

    def __init__(
        self,
        capacity: int,
        sample_shape: Sequence[int],
        dtype: torch.dtype,
        max_depth: int,
        device: torch.device,
    ) -> None:
        if capacity < 1:
            raise ValueError("the replay memory needs a capacity of at least 1")
        self.capacity = capacity
        self.device = device
        self.x = torch.zeros((capacity, *sample_shape), dtype=dtype, device=device)
        self.targets = torch.full((capacity, max_depth), -1, dtype=torch.long)
        self.pseudo = torch.full((capacity, max_depth), -1, dtype=torch.long)
        self.pseudo_bins = torch.full((capacity, max_depth), -1, dtype=torch.long)
        self.level = torch.zeros(capacity, dtype=torch.long)
        self.first_level = torch.zeros(capacity, dtype=torch.long)
        self.bin = torch.zeros(capacity, dtype=torch.long)
        self.importance = torch.zeros(capacity)
        self.last_loss = torch.zeros(capacity)
        self.fresh = torch.zeros(capacity, dtype=torch.bool)
        self.sample_id = torch.full((capacity,), -1, dtype=torch.long)
        self.size = 0

    FIELDS = ("x", "targets", "pseudo", "pseudo_bins", "level", "first_level", "bin", "importance", "last_loss", "fresh", "sample_id")

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The used slots of every field, on the CPU."""
        return {name: getattr(self, name)[: self.size].cpu() for name in self.FIELDS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the used slots; a checkpoint written before refinements existed has no
        ``first_level``: every sample there was labelled at its own level only."""
        self.size = len(state["level"])
        state = {"first_level": state["level"], **state}
        for name in self.FIELDS:
            field = getattr(self, name)
            field[: self.size] = state[name].to(field.device)

    def write(
        self,
        slot: int,
        x: torch.Tensor,
        targets: torch.Tensor,
        level: int,
        bin_id: int,
        sample_id: int,
        importance: float = 0.0,
    ) -> None:
        """Put a sample into ``slot`` (``slot == size`` appends), clearing its pseudo-labels."""
        if slot > self.size or slot >= self.capacity:
            raise IndexError(f"slot {slot} is outside the memory (size {self.size})")
        self.x[slot] = x.to(self.device, non_blocking=True)
        self.targets[slot] = targets
        self.pseudo[slot] = -1
        self.pseudo_bins[slot] = -1
        self.level[slot] = level
        self.first_level[slot] = level
        self.bin[slot] = bin_id
        self.sample_id[slot] = sample_id
        self.importance[slot] = importance
        self.fresh[slot] = True
        if slot == self.size:
            self.size += 1

    def slot_of(self, sample_id: int) -> int | None:
        """The slot holding ``sample_id``, or ``None`` when it is not in the memory."""
        found = (self.sample_id[: self.size] == sample_id).nonzero().flatten()
        return int(found[0]) if found.numel() else None

    def relabel(self, slot: int, targets: torch.Tensor, level: int, bin_id: int) -> None:
        """A finer label for the sample in ``slot``: its targets, level and bin change (so the
        balance of the bins follows the new label); ``first_level`` stays, so that the sample
        goes on teaching the levels it was labelled at before (a coarse sample that stopped
        supervising its coarse level would starve that level: the refined stream brings no new
        coarse samples). Its importance and pseudo-labels below the new level stay, those at
        levels it now has a true label for are cleared."""
        self.targets[slot] = targets
        self.level[slot] = level
        self.bin[slot] = bin_id
        self.pseudo[slot, :level] = -1
        self.pseudo_bins[slot, :level] = -1

    def remove(self, slots: torch.Tensor) -> torch.Tensor:
        """Drop ``slots`` and close the gaps, keeping the others in order; returns, for each new
        slot, the old slot it came from (to move per-slot state held elsewhere)."""
        keep = torch.ones(self.size, dtype=torch.bool)
        keep[slots[slots < self.size]] = False
        order = keep.nonzero().flatten()
        for tensor in self._tensors():
            rows = order.to(tensor.device, non_blocking=True)
            tensor[: order.numel()] = tensor[rows].clone()
        self.size = order.numel()
        return order

    def bin_counts(self, num_bins: int, include_pseudo: bool = False) -> torch.Tensor:
        """Samples per bin. With ``include_pseudo`` a sample is shared out evenly over its own
        bin and its pseudo bins (each sample weighs 1 in total): counting it fully in every bin
        would make pseudo-labelled samples look over-represented and evict them all."""
        bins = self.bin[: self.size]
        if not include_pseudo:
            return torch.bincount(bins, minlength=num_bins).float()
        pseudo = self.pseudo_bins[: self.size]
        has_pseudo = pseudo >= 0
        weight = 1.0 / (1.0 + has_pseudo.sum(dim=1).float())
        counts = torch.bincount(bins, weights=weight, minlength=num_bins)
        pseudo_weight = weight[:, None].expand_as(pseudo)[has_pseudo]
        return counts + torch.bincount(pseudo[has_pseudo], weights=pseudo_weight, minlength=num_bins)

    def members(self, bin_id: int) -> torch.Tensor:
        """Slots whose own (true) bin is ``bin_id``."""
        return (self.bin[: self.size] == bin_id).nonzero().flatten()

    def nbytes(self) -> int:
        """Bytes held by the memory's tensors (allocated capacity, not only the used slots)."""
        return sum(t.element_size() * t.nelement() for t in self._tensors())

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)
