"""Does the learner's memory stay flat on a long stream? Resident memory over N synthetic events.

Streams ``--events`` labelled synthetic events (the 3 → 6 → 12 hierarchy, multi-depth order,
repeated pass after pass) through one learner in micro-batches, predicting then learning as the
daemon does, and prints the resident set size (RSS, from /proc) every ``--every`` events, the
peak RSS, and the growth after the replay memory is full (target: < 5 %).

    python benchmarks/rss_flat.py --events 1000000 --method pl-fms
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from hle_stream.core.config import LearnerConfig
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import method_config
from hle_stream.eval.datasets.synthetic import make_synthetic
from hle_stream.eval.streams import build_stream

BATCH = 64


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--method", default="pl-fms")
    parser.add_argument("--memory-size", type=int, default=500)
    parser.add_argument("--every", type=int, default=50_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = make_synthetic(train_per_leaf=1000)
    stream = build_stream(dataset.labels_train, "multi-depth", 0)
    x_all, labels = dataset.x_train[stream.indices], list(stream.labels)
    learner = HierarchicalLearner(method_config(args.method, LearnerConfig(memory_size=args.memory_size, device="cpu")),
                                  dataset.input_shape, torch.float32)
    print(f"{args.events} events, method {args.method}, memory {args.memory_size}, "
          f"a pass is {len(labels)} events", flush=True)
    full_rss, done, started = None, 0, time.perf_counter()
    while done < args.events:
        start = done % len(labels)
        n = min(BATCH, len(labels) - start, args.events - done)
        x = torch.from_numpy(np.ascontiguousarray(x_all[start:start + n]))
        learner.predict_then_learn(x, labels[start:start + n])
        done += n
        if full_rss is None and learner.stats().memory_size == args.memory_size:
            full_rss = rss_bytes()
            print(f"memory full at {done} events: RSS {full_rss / 2**20:.1f} MiB", flush=True)
        if done % args.every < n:
            print(f"{done:>9} events  RSS {rss_bytes() / 2**20:7.1f} MiB  "
                  f"{done / (time.perf_counter() - started):6.0f} events/s", flush=True)
    end_rss = rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"RSS when the memory filled {full_rss / 2**20:.1f} MiB, at the end {end_rss / 2**20:.1f} MiB, "
          f"peak {peak / 2**20:.1f} MiB")
    print(f"growth after the memory filled: {100 * (end_rss - full_rss) / full_rss:+.2f} % (end), "
          f"{100 * (peak - full_rss) / full_rss:+.2f} % (peak)")


if __name__ == "__main__":
    main()
