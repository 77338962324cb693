"""Keeping the learner's randomness its own."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def global_rng_from(generator: torch.Generator) -> Iterator[None]:
    """Run code that draws from torch's global RNG (``nn.Linear``'s initialisation and
    ``torch.distributions`` take no generator) on ``generator``'s stream instead, and leave the
    global RNG as it was: the learner never seeds or consumes the process's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.get_rng_state())
