"""What the daemon's metrics cost: events/s through Kafka with metrics on and off, one run.

Both sides are the same daemon on the same Fashion-MNIST HLE stream; "on" serves /metrics (scraped
every second, as a busy Prometheus would) and runs the per-level ADWIN drift detectors, "off" is
``--no-metrics``. The runs alternate so that warm-up and noise fall on both sides.

    python benchmarks/metrics_cost.py --events 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics

import torch
from kafka_path import through_kafka  # this folder is on sys.path when the script runs

from hle_stream.core.config import LearnerConfig
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.producer_sim import simulated_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--method", default="pl-fms")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    events = list(simulated_events(load_dataset("fashion-mnist"), "multi-depth", 0, args.events))
    learner_config = LearnerConfig(memory_size=500, batch_size=16, device="cpu", seed=0)
    n = len(events)
    print(f"events: {n} Fashion-MNIST multi-depth, method {args.method}, torch threads {args.torch_threads}")
    on, off = [], []
    for round_ in range(args.repeats):
        for metrics, runs in ((False, off), (True, on)) if round_ % 2 == 0 else ((True, on), (False, off)):
            runs.append(through_kafka(events, learner_config, args.method, metrics=metrics, probe_requests=0)[0])
        print(f"round {round_ + 1}: metrics off {n / off[-1]:6.1f} events/s, on {n / on[-1]:6.1f} events/s, "
              f"ratio {off[-1] / on[-1]:.3f}", flush=True)
    on_s, off_s = statistics.median(on), statistics.median(off)
    print(f"median metrics off: {n / off_s:7.1f} events/s")
    print(f"median metrics on:  {n / on_s:7.1f} events/s")
    print(f"throughput with metrics / without: {off_s / on_s:.3f}")


if __name__ == "__main__":
    main()
