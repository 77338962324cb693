"""Everything to know about the learner on a GPU, from one short run (also runs on the CPU).

For each backbone and method it streams the Fashion-MNIST multi-depth stream (uint8 batches on
the host, as the daemon receives them from Kafka) through the learner and prints:

- events/s of learning (the clock is read after a device synchronisation);
- peak device memory (``torch.cuda.max_memory_allocated``);
- the share of time in the training step vs. bookkeeping: the same number of steps of a bare
  loop (same net, batch, bf16 autocast, fused Adam, batches drawn on the device, no memory, no
  metrics) timed in the same run; bookkeeping = 1 - bare time / learner time;
- host-device synchronisations per event once the replay memory is full, counted with
  ``torch.cuda.set_sync_debug_mode`` over a window of the stream (CUDA only). A step itself
  makes none (tests/unit/test_host_syncs.py checks that on the CPU); what is left is reading the
  numerical guard's verdicts once per stream batch (8 events) and the importance scoring's
  losses once per scoring (every 5 steps), about 0.4 per event for PL-FMS.

    python benchmarks/gpu.py                      # ~3 min on one GPU
    python benchmarks/gpu.py --events 800 --backbones small-cnn --device cpu   # smoke run
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from hle_stream.core.backbones import build_backbone
from hle_stream.core.device import pick_device
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import DEFAULT_METHOD, method_config
from hle_stream.core.model import HierarchicalNet, grow_head
from hle_stream.eval.bench.presets import PRESETS
from hle_stream.eval.bench.runner import RunSpec, prepare_stream
from hle_stream.eval.datasets import load_dataset

METHODS = ("er", "pl-fms", "pl-fms-reference", DEFAULT_METHOD)
WARMUP = 600  # untimed events first: the replay memory (500) is full after them
SYNC_WINDOW = 400  # then events watched for synchronisations (untimed), then the timed rest


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def learn(learner: HierarchicalLearner, x: torch.Tensor, labels: list[str]) -> None:
    chunk = max(1, learner.config.batch_size // 2)  # the learner trains on every half-batch of new events
    for start in range(0, len(x), chunk):
        learner.observe(x[start:start + chunk], labels[start:start + chunk])


def count_syncs(learner: HierarchicalLearner, x: torch.Tensor, labels: list[str]) -> int:
    """Synchronising CUDA calls made while learning ``x`` (each raises a warning in 'warn' mode)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            learn(learner, x, labels)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def run_learner(config, x: torch.Tensor, labels: list[str], device: torch.device) -> dict:
    """Learn ``WARMUP`` events, then ``SYNC_WINDOW`` more (counting synchronisations on CUDA),
    untimed; then time the rest."""
    learner = HierarchicalLearner(config, tuple(x.shape[1:]), x.dtype)
    untimed = WARMUP + SYNC_WINDOW
    syncs = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    learn(learner, x[:WARMUP], labels[:WARMUP])
    if device.type == "cuda":
        syncs = count_syncs(learner, x[WARMUP:untimed], labels[WARMUP:untimed]) / SYNC_WINDOW
    else:
        learn(learner, x[WARMUP:untimed], labels[WARMUP:untimed])
    synchronise(device)
    steps_before, started = learner.steps, time.perf_counter()
    learn(learner, x[untimed:], labels[untimed:])
    synchronise(device)
    seconds = time.perf_counter() - started
    return {"events": len(x) - untimed, "seconds": seconds, "steps": learner.steps - steps_before,
            "syncs_per_event": syncs, "learner": learner,
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def bare_step_seconds(learner: HierarchicalLearner, x: torch.Tensor, steps: int, amp: bool) -> float:
    """Seconds per step of forward/backward/fused-Adam on a net like the learner's (same
    backbone, same head sizes)."""
    device = learner.device
    net = HierarchicalNet(build_backbone(learner.config.backbone, tuple(x.shape[1:]))).to(device)
    net = net.to(memory_format=torch.channels_last)
    placeholder = torch.optim.Adam(net.parameters())
    for level, size in enumerate(learner.stats().classes_per_level, start=1):
        grow_head(net, placeholder, level, size)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4, fused=True)
    images = ((x.to(device).float() / 255.0 - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
    targets = [torch.randint(0, size, (len(x),), device=device) for size in net.head_sizes()]
    batch = learner.config.batch_size

    def step() -> None:
        rows = torch.randint(0, len(x), (batch,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(images[rows])
        loss = sum(F.cross_entropy(out.float(), t[rows]) for out, t in zip(logits, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(20):
        step()
    synchronise(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronise(device)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--backbones", default="small-cnn,resnet18")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}", flush=True)

    dataset = load_dataset("fashion-mnist", data_root=args.data_root)
    preset = replace(PRESETS["cpu"], train_limit=args.events + WARMUP + SYNC_WINDOW)
    stream, _ = prepare_stream(dataset, preset, RunSpec("multi-depth", "gpu", 0))
    x = torch.from_numpy(dataset.x_train[stream.indices])
    labels = [str(p) for p in stream.labels]
    header = f"{'backbone':10} {'method':29} {'events/s':>9} {'step share':>10} {'bookkeeping':>11} {'syncs/event':>11} {'peak MB':>8}"
    print(header)
    for backbone in args.backbones.split(","):
        for key in args.methods.split(","):
            config = method_config(key, preset.learner_config.with_(backbone=backbone, device=str(device), fms_horizon=2 * len(x)))
            result = run_learner(config, x, labels, device)
            bare = bare_step_seconds(result["learner"], x, min(result["steps"], 300), config.amp and device.type == "cuda")
            share = min(1.0, bare * result["steps"] / result["seconds"])
            syncs = f"{result['syncs_per_event']:.1f}" if result["syncs_per_event"] is not None else "n/a"
            peak = f"{result['peak_mb']:.0f}" if result["peak_mb"] is not None else "n/a"
            print(f"{backbone:10} {key:29} {result['events'] / result['seconds']:9.1f} {share:10.0%} {1 - share:11.0%} "
                  f"{syncs:>11} {peak:>8}", flush=True)
        bare_events = 1.0 / bare if bare else float("nan")
        print(f"{backbone:10} {'bare loop':29} {bare_events:9.1f} {'100%':>10} {'0%':>11} {'n/a':>11} {'':>8}  "
              "(one step per event)", flush=True)


if __name__ == "__main__":
    main()
