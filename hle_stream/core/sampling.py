"""Flexible memory sampling (FMS): how much of a new class's stream data enters a batch.

A stream sample of class c is kept with probability ``p_c = min(1, (t - t_c) * K / Z)``:
``t`` is the stream count, ``t_c`` the count when c was first seen, ``K`` the number of
classes seen so far at all levels, ``Z`` the horizon. A class that has just appeared is
learned from memory first and its stream share ramps up linearly over ``Z / K`` samples.
"""

from __future__ import annotations

import torch

MIN_RUNNING_HORIZON = 10_000
"""With no configured horizon, Z is the stream count so far but never less than this, so the
ramp of a class seen early is not cut to a handful of samples."""


def fms_keep_probability(
    t: int, first_seen: torch.Tensor, num_classes: int, horizon: float
) -> torch.Tensor:
    """``min(1, (t - t_c) * K / Z)`` for each entry of ``first_seen`` (the t_c)."""
    return ((t - first_seen).float() * num_classes / horizon).clamp(min=0.0, max=1.0)


def fms_horizon(configured: int | None, seen: int) -> float:
    """Z: the configured stream length when known, else a running estimate (see module doc)."""
    if configured is not None:
        return float(configured)
    return float(max(seen, MIN_RUNNING_HORIZON))


class StreamSampler:
    """The sampling part: when a step is due, and which rows it trains on.

    Every ``batch_size // 2`` stream samples, ``online_iter`` steps per sample are taken (a
    fraction carries to the next batch); each step keeps a stream row with its class's FMS
    probability (all rows without flexible sampling) and fills the batch from the memory.
    """

    def __init__(self, batch_size: int, online_iter: float, flexible: bool, horizon: int | None) -> None:
        self.batch_size = batch_size
        self.stream_batch_size = max(1, batch_size // 2)
        self.online_iter = online_iter
        self.flexible = flexible
        self.horizon = horizon
        self.updates = 0.0  # steps owed, fractions included

    def count(self) -> None:
        """A stream sample arrived for training."""
        self.updates += self.online_iter

    def steps_due(self) -> int:
        """Whole steps owed now; the fraction waits."""
        steps = int(self.updates)
        self.updates -= steps
        return steps

    def share(self, seen: int, first_seen: torch.Tensor, total_classes: int) -> torch.Tensor | None:
        """FMS's keep probability of stream samples of classes first seen at ``first_seen``;
        ``None`` when every stream sample is kept."""
        if not self.flexible or seen <= self.stream_batch_size:
            return None
        return fms_keep_probability(seen, first_seen, total_classes, fms_horizon(self.horizon, seen))

    def rows(self, seen: int, first_seen: torch.Tensor, total_classes: int, memory_size: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's stream rows (indices into the pending batch) and memory slots."""
        p = self.share(seen, first_seen, total_classes)
        keep = torch.ones(first_seen.numel(), dtype=torch.bool) if p is None else torch.rand(
            p.shape, generator=generator) < p
        kept = keep.nonzero().flatten()
        slots = torch.randperm(memory_size, generator=generator)[:min(self.batch_size - kept.numel(), memory_size)]
        return kept, slots
