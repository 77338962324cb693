"""Where the learner runs: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import os

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is visible; ``cpu``/``cuda[:N]`` force a device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class HostStager:
    """Moves a stream batch to the learner's device through a reused pinned host buffer.

    On CUDA the samples are stacked into page-locked memory and copied without blocking the
    host, so decoding the next Kafka batch overlaps the copy; the buffer is reused only once
    its previous copy has finished. Elsewhere it is a plain stack.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffer: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def to_device(self, samples: list[torch.Tensor]) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.stack(samples).to(self.device)
        first = samples[0]
        wanted = (len(samples), *first.shape)
        buffer = self._buffer
        if buffer is None or buffer.shape[0] < len(samples) or buffer.shape[1:] != first.shape or buffer.dtype != first.dtype:
            buffer = self._buffer = torch.empty(wanted, dtype=first.dtype, pin_memory=True)
        elif self._copied is not None:
            self._copied.synchronize()
        staged = torch.stack(samples, out=buffer[: len(samples)])
        moved = staged.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return moved


def default_torch_threads(cores: int | None = None) -> int:
    """Intra-op threads for a daemon: one per core, less one left to Kafka's I/O, the HTTP server
    and a broker beside it: on 2 cores, through Kafka, 1 thread learns faster than 2, though 2 are
    faster in process with nothing beside them (``benchmarks/kafka_path.py``; figures in
    docs/operating.md)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1)
