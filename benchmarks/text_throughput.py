"""Is the encoder the daemon's ceiling on text events? Its rate alone against the daemon's.

For each max length (word pieces the encoder reads): the encoder alone embeds about ``--seconds``
of 20 Newsgroups posts in micro-batches of 64 (the daemon's batch) with ``--threads`` torch
threads; then the same posts,
as text events with their labels, all in a topic of a local broker first, go through
``hle-stream run`` with the same max length and threads, once with ``--train-budget auto`` and
once ``unlimited``. The daemon's rate is read from its ``/metrics`` (events consumed per second
from its first micro-batch to its last: the encoder's load, a few seconds at the first text, is
not counted), with how many events were predicted and how many trained with a gradient step.

    python benchmarks/text_throughput.py --lengths 32,128,256 --seconds 40
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import repo_root  # noqa: F401  (tests.support is importable after it)
import torch

from connectors.broker import LocalBroker, free_port
from connectors.kafka_io import read_topic
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.producer_sim import produce, simulated_events
from hle_stream.service.checkpoint import decode
from hle_stream.text.encoder import EncoderChoice, TextEncoder
from tests.support.fault_injection import EXE

BATCH = 64
FIRST_BATCH_S = 0.1  # a micro-batch's predictions go out within milliseconds of each other


def encoder_rate(texts: list[str], max_tokens: int, threads: int) -> float:
    encoder = TextEncoder(EncoderChoice(max_tokens=max_tokens, threads=threads))
    encoder.encode(texts[:BATCH])  # warm
    started = time.perf_counter()
    for start in range(0, len(texts), BATCH):
        encoder.encode(texts[start:start + BATCH])
    return len(texts) / (time.perf_counter() - started)


def _scrape(port: int) -> tuple[float, float] | None:
    """Events consumed, and labelled events remembered without a gradient step (None: no answer)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    values = [re.findall(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
              for name in ("hle_events_consumed_total", "hle_events_skipped_training_total")]
    return (float(values[0][0]), float(values[1][0])) if all(values) else None


def daemon_rate(broker: LocalBroker, topic: str, events: list[dict], max_tokens: int, threads: int, budget: str,
                work: Path) -> dict:
    settings = KafkaSettings(broker.bootstrap_servers)
    ensure_topics(settings, {topic: 1, f"{topic}-pred": 1, f"{topic}-dlq": 1})
    produce(settings, topic, iter(events))
    port, checkpoints = free_port(), work / f"ckpt-{topic}"
    daemon = subprocess.Popen(
        [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic,
         "--predictions-topic", f"{topic}-pred", "--dead-letter-topic", f"{topic}-dlq", "--group-id", topic,
         "--checkpoint-dir", str(checkpoints), "--http-port", str(port), "--max-events", str(len(events)),
         "--train-budget", budget, "--encoder-max-tokens", str(max_tokens), "--encoder-threads", str(threads),
         "--torch-threads", str(threads)], stderr=open(work / f"{topic}.log", "wb"))
    skipped = 0.0  # labelled events remembered without a gradient step, as last scraped
    while daemon.poll() is None:
        scraped = _scrape(port)
        skipped = scraped[1] if scraped else skipped
        time.sleep(0.5)
    # The daemon's rate from its predictions' timestamps (set when it sent them): from its first
    # micro-batch's answers to its last's, so neither the encoder's load nor the final checkpoint counts.
    sent = sorted(r.timestamp / 1000 for r in read_topic(settings, f"{topic}-pred", follow=False))
    first_batch = sum(1 for stamp in sent if stamp - sent[0] < FIRST_BATCH_S)
    state = decode(sorted(checkpoints.glob("checkpoint-*.pt"))[-1].read_bytes())
    return {"exit": daemon.returncode, "events_per_s": (len(sent) - first_batch) / max(sent[-1] - sent[0], 1e-9),
            "predicted": len(sent), "steps": state["learner"]["counters"]["steps"],
            "trained": state["learner"]["counters"]["seen"] - int(skipped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="32,128,256", help="max lengths (word pieces) to measure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the encoder and the daemon")
    parser.add_argument("--seconds", type=float, default=40.0, help="about how long each daemon run streams")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    events = list(simulated_events(load_dataset("20news-text", data_root=args.data_root, encoder=None),
                                   "multi-depth", 0))
    texts = [event["text"] for event in events]
    rows = []
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as work:
        for length in (int(v) for v in args.lengths.split(",")):
            count = max(4 * BATCH, round(encoder_rate(texts[:4 * BATCH], length, args.threads) * args.seconds / BATCH)
                        * BATCH)  # about --seconds of the encoder's work
            alone = encoder_rate(texts[:count], length, args.threads)  # on the very texts the daemon gets
            row = {"max_tokens": length, "encoder_alone": alone, "events": count}
            for budget in ("auto", "unlimited"):
                row[budget] = daemon_rate(broker, f"text-{length}-{budget}", events[:count], length, args.threads,
                                          budget, Path(work))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{args.threads} torch thread(s); trained: labelled events learned with a gradient step (steps taken)")
    print("| max tokens | encoder alone (texts/s) | daemon, budget auto | ratio | trained (steps) | "
          "daemon, unlimited | ratio | trained (steps) | events |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        auto, unlimited = row["auto"], row["unlimited"]
        print(f"| {row['max_tokens']} | {row['encoder_alone']:.1f} | {auto['events_per_s']:.1f} | "
              f"{auto['events_per_s'] / row['encoder_alone']:.2f} | {auto['trained']} ({auto['steps']}) | "
              f"{unlimited['events_per_s']:.1f} | {unlimited['events_per_s'] / row['encoder_alone']:.2f} | "
              f"{unlimited['trained']} ({unlimited['steps']}) | {row['events']}, predicted {auto['predicted']} / "
              f"{unlimited['predicted']} |")


if __name__ == "__main__":
    main()
