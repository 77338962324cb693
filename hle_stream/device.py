"""Where the learner runs: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is visible; ``cpu``/``cuda[:N]`` force a device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
