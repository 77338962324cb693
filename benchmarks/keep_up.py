"""Keeping up with a stream faster than the learner (``--train-budget``), as a user runs it.

1. Calibrate: the learner's sustainable rate R, in process with one torch thread
   (``kafka_path.in_process``: predict-then-learn in micro-batches of 64), on the same events.
2. Hurried: the producer sends at ``--speed`` × R (3 by default) for ``--minutes``, live, into a
   local broker; ``hle-stream run --train-budget auto`` consumes it. Its ``/metrics`` are read
   every second: the consumer lag (events, and seconds at the producer's rate), the budget in
   force and the events predicted without a gradient step. Afterwards: every event predicted?
3. Unhurried: the same events, all in the topic first, through ``hle-stream run --train-budget
   unlimited`` (every labelled event trained, however long it takes).
Prequential accuracy per level (the daemon's own, from its final checkpoint: the anytime
accuracy, online A_auc, and the running accuracy over all events) of both, and the difference:
the accuracy cost of keeping up.

    python benchmarks/keep_up.py --minutes 5 --speed 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import repo_root  # noqa: F401  (tests.support is importable after it)
import torch
from kafka_path import in_process  # this folder is on sys.path when the script runs

from connectors.broker import LocalBroker, free_port
from connectors.kafka_io import read_topic
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.core.config import LearnerConfig
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.producer_sim import produce, simulated_events
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.service.checkpoint import decode
from tests.support.fault_injection import EXE


def stream_of(events: list[dict], count: int) -> list[dict]:
    """``count`` events: the dataset's stream, again and again, with fresh ids each pass."""
    out = []
    for lap in itertools.count():
        for event in events:
            if len(out) == count:
                return out
            out.append({**event, "id": f"{lap}-{event['id']}"})


def _scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


def _value(text: str, pattern: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{pattern} ([0-9.e+-]+)$", text, re.MULTILINE))


def run_daemon(broker: LocalBroker, topic: str, count: int, budget: str, work: Path,
               rate: float | None = None, events: list[dict] | None = None) -> dict:
    """One daemon over ``topic`` until it has consumed ``count`` events (its events produced at
    ``rate`` live, or all beforehand); returns what was measured."""
    port = free_port()
    settings = KafkaSettings(broker.bootstrap_servers)
    checkpoints = work / f"ckpt-{topic}"
    ensure_topics(settings, {topic: 1, f"{topic}-pred": 1, f"{topic}-dlq": 1})
    if rate is None:
        produce(settings, topic, iter(events))
    daemon = subprocess.Popen(
        [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic,
         "--predictions-topic", f"{topic}-pred", "--dead-letter-topic", f"{topic}-dlq", "--group-id", topic,
         "--checkpoint-dir", str(checkpoints), "--http-port", str(port), "--max-events", str(count),
         "--train-budget", budget, "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500",
         "--report-every-seconds", "30"], stderr=open(work / f"{topic}.log", "wb"))
    producer = None
    if rate is not None:  # a live stream, once the daemon holds its partition
        while daemon.poll() is None and _value(_scrape(port), "hle_input_partitions_assigned") < 1:
            time.sleep(0.2)
        producer = threading.Thread(target=produce, args=(settings, topic, iter(events), rate), daemon=True)
        producer.start()
    started, samples = time.monotonic(), []
    while daemon.poll() is None:
        text = _scrape(port)
        if text:
            samples.append({"t": time.monotonic() - started, "lag": _value(text, r"hle_consumer_lag_messages\{[^}]*\}"),
                            "budget": _value(text, "hle_train_budget"),
                            "skipped": _value(text, "hle_events_skipped_training_total"),
                            "steps_per_s": _value(text, "hle_train_steps_per_second")})
        time.sleep(1.0)
    seconds = time.monotonic() - started
    if producer is not None:
        producer.join(30)
    predicted = {json.loads(r.value)["id"] for r in read_topic(settings, f"{topic}-pred", follow=False)}
    state = decode(sorted(checkpoints.glob("checkpoint-*.pt"))[-1].read_bytes())
    prequential = PrequentialAccuracy.from_state_dict(state["prequential"])
    return {"exit": daemon.returncode, "seconds": round(seconds, 1), "predicted": len(predicted),
            "steps": state["learner"]["counters"]["steps"],
            "skipped": max((s["skipped"] for s in samples), default=0.0),
            "max_lag": max((s["lag"] for s in samples), default=0.0), "samples": samples,
            "anytime": {lv: round(100 * a, 1) for lv, a in prequential.anytime_accuracy().items()},
            "running": {lv: round(100 * a, 1) for lv, a in prequential.running_accuracy().items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--speed", type=float, default=3.0, help="producer rate over the learner's rate")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--method", default="pl-fms")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, data_root=args.data_root)
    events = list(simulated_events(dataset, "multi-depth", 0))
    torch.set_num_threads(1)
    rate = 1500 / in_process(events[:1500], LearnerConfig(), args.method)
    fast = args.speed * rate
    count = int(fast * args.minutes * 60)
    stream = stream_of(events, count)
    print(f"learner in process: {rate:.1f} events/s; producer at {fast:.1f} events/s ({args.speed:g}x) for "
          f"{args.minutes:g} min: {count} events ({count / len(events):.2f} passes over {args.dataset})", flush=True)
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as work:
        hurried = run_daemon(broker, "hurried", count, "auto", Path(work), rate=fast, events=stream)
        lag_s = hurried["max_lag"] / fast
        print(f"auto: {hurried['seconds']} s, predicted {hurried['predicted']} of {count}, max lag "
              f"{hurried['max_lag']:.0f} events = {lag_s:.2f} s at the producer's rate; {hurried['steps']} steps, "
              f"{hurried['skipped']:.0f} labelled events remembered without a step "
              f"({hurried['skipped'] / count:.0%}), exit {hurried['exit']}", flush=True)
        calm = run_daemon(broker, "unhurried", count, "unlimited", Path(work), events=stream)
        print(f"unlimited, unhurried: {calm['seconds']} s, predicted {calm['predicted']} of {count}, "
              f"{calm['steps']} steps, exit {calm['exit']}", flush=True)
    print("\n| level | anytime acc. auto | unhurried | cost | running acc. auto | unhurried | cost |")
    print("|---|---|---|---|---|---|---|")
    for level in sorted(calm["anytime"]):
        a, b = hurried["anytime"].get(level, 0.0), calm["anytime"][level]
        c, d = hurried["running"].get(level, 0.0), calm["running"][level]
        print(f"| {level} | {a} | {b} | {a - b:+.1f} | {c} | {d} | {c - d:+.1f} |")
    lags = [s["lag"] / fast for s in hurried["samples"]]
    print(f"\nlag over the hurried run (s at the producer's rate): p50 {np.percentile(lags, 50):.2f}, "
          f"p99 {np.percentile(lags, 99):.2f}, max {max(lags):.2f}; budget in force at the end "
          f"{hurried['samples'][-1]['budget'] if hurried['samples'] else float('nan'):.3f}")


if __name__ == "__main__":
    main()
