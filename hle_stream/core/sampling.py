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
