"""The supervision part: which levels each row of a training batch teaches, and with what weight.

A stream sample teaches its own level or its whole label path (``supervision``); a replayed one
likewise (``replay_supervision``), its ancestors at ``replay_ancestor_weight``, and with
``replay_path_after_ramp`` only once its class is past its flexible-sampling ramp. A memory
sample refined after it was stored teaches every level from the one it was first labelled at.
Pseudo-labels (assigned by the memory policy) enter the loss at ``pseudo_loss_weight``, and
ER-ACE's asymmetric loss restricts a stream row's softmax to the incoming classes.
"""

from __future__ import annotations

from typing import Callable

import torch

from hle_stream.core.memory import ReplayMemory

RampShare = Callable[[torch.Tensor], "torch.Tensor | None"]
"""Global class ids -> their FMS keep probability now (``None``: no ramp is running)."""


class Supervision:
    def __init__(self, stream: str, replay: str, replay_ancestor_weight: float, replay_path_after_ramp: bool,
                 pseudo_loss_weight: float, asymmetric: bool) -> None:
        self.stream = stream
        self.replay = replay
        self.replay_ancestor_weight = replay_ancestor_weight
        self.replay_path_after_ramp = replay_path_after_ramp
        self.pseudo_loss_weight = pseudo_loss_weight
        self.asymmetric = asymmetric

    def batch(self, targets: torch.Tensor, levels: torch.Tensor, memory: ReplayMemory, slots: torch.Tensor,
              ramp_share: RampShare) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Targets and per-entry loss weights (``None``: all 1) of a batch: the stream rows'
        ``targets`` at ``levels``, then the memory's ``slots``."""
        batch_levels = torch.cat([levels, memory.level[slots]])
        batch_targets = self.targets(torch.cat([targets, memory.targets[slots]]), batch_levels,
                                     torch.cat([levels, self.memory_first_levels(memory, slots, ramp_share)]))
        weights = None
        if self.pseudo_loss_weight > 0:
            pseudo = torch.cat([torch.full_like(targets, -1), memory.pseudo[slots]])
            batch_targets, weights = merge_pseudo(batch_targets, pseudo, self.pseudo_loss_weight)
        if self.replay_ancestor_weight != 1.0:
            replay = torch.cat([torch.ones_like(targets, dtype=torch.float), self._replay_weights(memory, slots)])
            weights = replay if weights is None else weights * replay
        return batch_targets, weights

    def incoming(self, stream_rows: int) -> int:
        """How many leading rows the loss treats as incoming (ER-ACE), 0 for the plain loss."""
        return stream_rows if self.asymmetric else 0

    def memory_targets(self, memory: ReplayMemory, slots: torch.Tensor, ramp_share: RampShare) -> torch.Tensor:
        """What replaying ``slots`` teaches (for scoring their importance)."""
        return self.targets(memory.targets[slots], memory.level[slots],
                            self.memory_first_levels(memory, slots, ramp_share))

    def targets(self, targets: torch.Tensor, levels: torch.Tensor, first_levels: torch.Tensor) -> torch.Tensor:
        """The targets the loss sees: all known ancestors (``path``) or the own level only,
        which for a refined memory sample spans the levels it was labelled at
        (``first_levels`` .. ``levels``)."""
        if self.stream == "path":
            return targets
        depth = torch.arange(1, targets.shape[1] + 1, device=targets.device)
        own = (depth >= first_levels[:, None]) & (depth <= levels[:, None])
        return torch.where(own, targets, torch.full_like(targets, -1))

    def memory_first_levels(self, memory: ReplayMemory, slots: torch.Tensor, ramp_share: RampShare) -> torch.Tensor:
        """The coarsest level each replayed sample teaches under own-level supervision: level 1
        with path replay (once past the ramp, with ``replay_path_after_ramp``), else the level it
        was first labelled at."""
        own = memory.first_level[slots]
        if self.replay != "path":
            return own
        if self.replay_path_after_ramp:
            share = ramp_share(memory.bin[slots])
            if share is not None:
                return torch.where(share < 1, own, 1)
        return torch.ones_like(slots)

    def _replay_weights(self, memory: ReplayMemory, slots: torch.Tensor) -> torch.Tensor:
        """(len(slots), max_depth) loss weights of replayed rows: ``replay_ancestor_weight`` at
        the levels above the one a sample was labelled at, 1 elsewhere."""
        depth = torch.arange(1, memory.targets.shape[1] + 1)
        above = depth[None, :] < memory.first_level[slots][:, None]
        return torch.where(above, self.replay_ancestor_weight, 1.0)


def merge_pseudo(targets: torch.Tensor, pseudo: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill unsupervised entries with pseudo-labels; weights are 1 for true, ``weight`` for pseudo."""
    use_pseudo = (targets < 0) & (pseudo >= 0)
    merged = torch.where(use_pseudo, pseudo, targets)
    weights = torch.where(use_pseudo, weight, 1.0).to(torch.float32)
    return merged, weights
