"""Kafka-path cost and HTTP latency of the daemon, measured in one run (on demand, not in CI).

1. In process: the same learner and settings fed the same Fashion-MNIST HLE events in
   micro-batches of 64, predict-then-learn, no Kafka.
2. Through Kafka: the events produced to a local Tansu broker first, then the daemon consumes,
   predicts, publishes, learns and checkpoints them (timed from its first record until it has
   stopped, so the group join is excluded and the final checkpoint included).
3. ``POST /predict`` latency on the live daemon: single events, one request at a time.

    python benchmarks/kafka_path.py --events 3000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from connectors.broker import LocalBroker, free_port
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.contract import parse_event
from hle_stream.core.config import LearnerConfig
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import method_config
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.producer_sim import produce, simulated_events
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.kafka_daemon import KafkaDaemon

BATCH = 64


def in_process(events: list[dict], learner_config: LearnerConfig, method: str) -> float:
    parsed = [parse_event(json.dumps(e).encode()) for e in events]
    learner = HierarchicalLearner(method_config(method, learner_config), parsed[0].x.shape,
                                  torch.from_numpy(parsed[0].x[:0]).dtype)
    started = time.perf_counter()
    for start in range(0, len(parsed), BATCH):
        chunk = parsed[start:start + BATCH]
        x = torch.from_numpy(np.stack([e.x for e in chunk]))
        learner.predict_then_learn(x, [e.label or None for e in chunk])
    return time.perf_counter() - started


def through_kafka(events: list[dict], learner_config: LearnerConfig, method: str, metrics: bool = True,
                  probe_requests: int = 300) -> tuple[float, list[float]]:
    """Seconds from the daemon's first record to its stop, and ``POST /predict`` latencies.

    With ``metrics``, /metrics is scraped every second while the daemon runs (a busy Prometheus).
    """
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as checkpoints:
        settings = KafkaSettings(broker.bootstrap_servers, session_timeout_ms=2000, heartbeat_interval_ms=500)
        port = free_port()
        # unlimited: the events are a backlog, and this measures the learner, not the compute budget
        config = DaemonConfig(checkpoint_dir=Path(checkpoints), max_events=len(events), max_batch=BATCH,
                              train_budget="unlimited",
                              http_port=port, report_every_seconds=1e9, metrics=metrics,
                              processing=ProcessingConfig(method=method, learner_config=learner_config))
        ensure_topics(settings, {config.input_topic: 1, config.predictions_topic: 1, config.dead_letter_topic: 1})
        produce(settings, config.input_topic, iter(events))
        daemon = KafkaDaemon(settings, config, report=lambda *_: None)
        runner = threading.Thread(target=daemon.run)
        runner.start()
        scraped = _scrape_while(runner, port) if metrics else 0
        runner.join()
        # from the first record to the loop's end, final checkpoint and close included
        elapsed = time.monotonic() - daemon.first_record_at
        if metrics:
            assert scraped > 0, "the benchmark meant to scrape /metrics and never did"
        if not probe_requests:
            return elapsed, []
        # The daemon has stopped its loop; serve a fresh one with the trained model for latency.
        from hle_stream.service.serving import HttpServer

        daemon.loop.last_tick = time.monotonic()
        server = HttpServer(daemon, "127.0.0.1", port)
        server.start()
        time.sleep(1.0)
        probe = {k: v for k, v in events[0].items() if k != "label"}
        latencies = []
        for i in range(probe_requests):
            body = json.dumps({**probe, "id": f"probe-{i}"}).encode()
            tick = time.perf_counter()
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body),
                                       timeout=10).read()
            except urllib.error.HTTPError as err:  # 503: over the /predict CPU share; wait as told
                if err.code != 503:
                    raise
                time.sleep(float(err.headers.get("Retry-After", "1")))
                continue
            latencies.append(time.perf_counter() - tick)
        server.stop()
        return elapsed, latencies


def _scrape_while(runner: threading.Thread, port: int) -> int:
    """GET /metrics once a second until ``runner`` ends; returns how many scrapes succeeded."""
    scrapes = 0
    while runner.is_alive():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            scrapes += 1
        except OSError:
            pass  # the server is not up yet, or already down
        runner.join(1.0)
    return scrapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--method", default="pl-fms")
    parser.add_argument("--repeats", type=int, default=2, help="alternate in-process and Kafka runs this many times")
    parser.add_argument("--torch-threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for both sides (1 leaves a core to the broker on a 2-core box)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    dataset = load_dataset("fashion-mnist")
    events = list(simulated_events(dataset, "multi-depth", 0, args.events))
    learner_config = LearnerConfig(memory_size=500, batch_size=16, device="cpu", seed=0)
    n = len(events)
    print(f"events: {n} Fashion-MNIST multi-depth, method {args.method}, micro-batch {BATCH}, "
          f"torch threads {args.torch_threads}")
    # Alternating runs, so that warm-up and a noisy neighbour do not favour one side.
    local, kafka, latencies = [], [], []
    for round_ in range(args.repeats):
        local.append(in_process(events, learner_config, args.method))
        seconds, lat = through_kafka(events, learner_config, args.method)
        kafka.append(seconds)
        latencies += lat
        print(f"round {round_ + 1}: in process {n / local[-1]:6.1f} events/s, through Kafka {n / kafka[-1]:6.1f} events/s, "
              f"ratio {local[-1] / kafka[-1]:.3f}", flush=True)
    local_s, kafka_s = statistics.median(local), statistics.median(kafka)
    print(f"median in process:    {local_s:7.1f} s  {n / local_s:7.1f} events/s")
    print(f"median through Kafka: {kafka_s:7.1f} s  {n / kafka_s:7.1f} events/s")
    print(f"Kafka path throughput / in-process throughput: {local_s / kafka_s:.3f}")
    lat = sorted(latencies)
    print(f"POST /predict (1 event, sequential, {len(lat)} requests): p50 {1000 * statistics.median(lat):.1f} ms, "
          f"p99 {1000 * lat[int(0.99 * (len(lat) - 1))]:.1f} ms")


if __name__ == "__main__":
    main()
