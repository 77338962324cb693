"""Run many (scenario, method, seed) benchmark runs, in parallel worker processes if asked.

Small models on a CPU scale better as several single-threaded runs side by side than as one
run on all cores, so ``jobs`` runs go at once, each with ``cores / jobs`` torch threads.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from hle_stream.eval.bench.presets import Preset
from hle_stream.eval.bench.runner import RunSpec, run_benchmark
from hle_stream.eval.datasets import HierarchicalDataset, load_dataset
from hle_stream.text.encoder import EncoderChoice

ProgressSink = Callable[[RunSpec, int, int], None]


@dataclass(frozen=True)
class DataSource:
    name: str | None
    npz: Path | None
    data_root: Path | None
    encoder: EncoderChoice = EncoderChoice()  # a text dataset's (its vectors are cached: embedded once)

    def load(self) -> HierarchicalDataset:
        return load_dataset(self.name, self.npz, self.data_root, encoder=self.encoder)


_worker_dataset: HierarchicalDataset | None = None
_worker_queue = None


def _init_worker(source: DataSource, threads: int, progress_queue) -> None:
    global _worker_dataset, _worker_queue
    torch.set_num_threads(threads)
    _worker_dataset = source.load()
    _worker_queue = progress_queue


def _run_in_worker(preset: Preset, spec: RunSpec) -> dict:
    def report(position: int, total: int) -> None:
        _worker_queue.put((spec, position, total))

    return run_benchmark(_worker_dataset, preset, spec, report)


def run_all(source: DataSource, preset: Preset, specs: list[RunSpec], jobs: int, progress: ProgressSink) -> list[dict]:
    """Every run of ``specs``; results in the order of ``specs``."""
    cores = os.cpu_count() or 1
    dataset = source.load()  # here first: a text dataset is embedded once, not by every worker at once
    if jobs <= 1:
        return [run_benchmark(dataset, preset, spec, lambda p, t, s=spec: progress(s, p, t))
                for spec in specs]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        progress_queue = manager.Queue()
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(source, max(1, cores // jobs), progress_queue)) as pool:
            futures = [pool.submit(_run_in_worker, preset, spec) for spec in specs]
            while not all(f.done() for f in futures):
                try:
                    progress(*progress_queue.get(timeout=0.5))
                except queue.Empty:
                    pass
            while not progress_queue.empty():
                progress(*progress_queue.get())
            return [f.result() for f in futures]
