"""Served paths with the confidence threshold fixed, and calibrated to a target precision.

The daemon serves each event a coarse-to-fine path that stops at the first level below its
confidence threshold; with ``--target-precision`` that threshold follows the labels so that the
served nodes are that precise (``hle_stream.metrics.served_threshold``). This script feeds a
dataset's simulated stream (the producer simulation's events, HLE order, every event labelled)
through ``MicroBatchProcessor`` in the daemon's micro-batches (what the daemon runs between a
poll and a checkpoint; no Kafka), with the daemon's default learner, once per target, and prints
what was served in each quarter of the stream: served-node precision, mean served depth, and the
threshold at the quarter's end. Learning does not depend on the threshold, so every run learns
the same model.

    python benchmarks/served_threshold.py --dataset fashion-mnist --targets 0,0.9,0.95 --limit 12000
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from connectors.memory import ListSink, RawRecord
from hle_stream.core.config import LearnerConfig
from hle_stream.core.methods import DEFAULT_METHOD
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.producer_sim import simulated_events
from hle_stream.metrics.served_paths import ServedPathQuality
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.processing import MicroBatchProcessor


def _difference(now: ServedPathQuality, before: ServedPathQuality) -> ServedPathQuality:
    """What was served between two copies of the running totals (every field is a count)."""
    return ServedPathQuality(**{name: value - getattr(before, name) for name, value in vars(now).items()})


def served_by_quarter(records: list[RawRecord], target: float, method: str, seed: int,
                      batch: int) -> list[tuple[ServedPathQuality, float]]:
    """What was served in each quarter of ``records``, and the threshold at its end."""
    config = ProcessingConfig(method=method, learner_config=LearnerConfig(seed=seed), target_precision=target)
    processor, sink = MicroBatchProcessor(config), ListSink()
    quarters, before = [], ServedPathQuality()
    bounds = [round(len(records) * k / 4) for k in range(1, 5)]
    start = 0
    for end in bounds:
        for first in range(start, end, batch):
            processor.process(records[first:min(first + batch, end)], sink)
        now = replace(processor.scoring.served_paths)
        quarters.append((_difference(now, before), processor.confidence_threshold))
        before, start = now, end
    return quarters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-root", type=Path, default=None, help="folder of the built-in datasets")
    parser.add_argument("--targets", default="0,0.9,0.95", help="target precisions (0: the fixed threshold, 0.5)")
    parser.add_argument("--limit", type=int, default=12000, help="events (a stratified subsample of the training set)")
    parser.add_argument("--method", default=DEFAULT_METHOD)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="events per micro-batch (the daemon's --max-batch)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset, data_root=args.data_root)
    records = [RawRecord("events", 0, i, json.dumps(event).encode())
               for i, event in enumerate(simulated_events(dataset, "multi-depth", args.seed, args.limit))]
    print(f"{args.dataset}, {len(records)} events, method {args.method}, seed {args.seed}; per quarter of the "
          f"stream: served-node precision % / mean served depth / threshold at its end")
    for target in (float(t) for t in args.targets.split(",")):
        quarters = served_by_quarter(records, target, args.method, args.seed, args.batch)
        name = "fixed 0.5" if target == 0 else f"target {target:g}"
        cells = [f"{100 * q.precision:.1f} / {q.mean_depth:.2f} / {threshold:.6g}" for q, threshold in quarters]
        print(f"{name:>12}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
