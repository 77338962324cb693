"""How fast hle-stream starts, as a user starts it (the installed ``hle-stream`` command):

1. ``hle-stream --help`` and every command's ``--help``: wall seconds, median of N runs.
2. ``hle-stream run`` against a local broker whose input topic already holds one event: seconds
   from launch to ``/healthz`` answering, and to the event's prediction in the predictions topic
   (the daemon is then consuming: torch and kafka-python loaded, group joined, model created).
   Median of N launches, each with a fresh group and checkpoint directory. Both session settings
   are measured: the default (6000 ms, valid on any Kafka) and 2000 ms (the local broker holds
   each group join for half the session timeout).

    python benchmarks/startup.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import urllib.request

import repo_root  # noqa: F401  (tests.support is importable after it)
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.broker import LocalBroker, free_port
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from tests.support.fault_injection import EXE

COMMANDS = ["bench", "export-npz", "run", "serve", "demo", "broker", "produce", "tail"]


def help_seconds(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([EXE, *args, "--help"], check=True, capture_output=True)
    return time.perf_counter() - started


def _healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False


def launch_to_first_prediction(broker: LocalBroker, run: int, session_ms: int) -> tuple[float, float]:
    """Seconds from launch to /healthz, and to the first prediction published."""
    settings = KafkaSettings(broker.bootstrap_servers)
    topic = f"startup-{session_ms}-{run}"
    ensure_topics(settings, {topic: 1, f"{topic}-pred": 1, f"{topic}-dlq": 1})
    producer = KafkaProducer(**settings.client())
    producer.send(topic, json.dumps({"id": "first", "x": [0.5] * 16, "label": "a/b"}).encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(**settings.client(), auto_offset_reset="earliest", fetch_max_wait_ms=50)
    consumer.assign([TopicPartition(f"{topic}-pred", 0)])
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        daemon = subprocess.Popen(
            [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic,
             "--predictions-topic", f"{topic}-pred", "--dead-letter-topic", f"{topic}-dlq",
             "--group-id", topic, "--checkpoint-dir", work, "--http-port", str(port),
             "--session-timeout-ms", str(session_ms), "--heartbeat-interval-ms", str(session_ms // 4)],
            stderr=subprocess.DEVNULL)
        healthy_at = predicted_at = None
        try:
            while predicted_at is None and time.perf_counter() - started < 60:
                if healthy_at is None and _healthy(port):
                    healthy_at = time.perf_counter() - started
                if consumer.poll(timeout_ms=50):
                    predicted_at = time.perf_counter() - started
        finally:
            daemon.terminate()
            daemon.wait(30)
            consumer.close()
    if predicted_at is None:
        raise TimeoutError("no prediction within 60 s")
    return healthy_at or predicted_at, predicted_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"hle-stream --help: median {statistics.median(help_seconds([]) for _ in range(args.runs)):.2f} s "
          f"of {args.runs}")
    for command in COMMANDS:
        times = [help_seconds([command]) for _ in range(args.runs)]
        print(f"hle-stream {command} --help: median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    with LocalBroker() as broker:
        for session_ms in (6000, 2000):
            runs = [launch_to_first_prediction(broker, i, session_ms) for i in range(args.runs)]
            print(f"hle-stream run, session {session_ms} ms: /healthz after median "
                  f"{statistics.median(r[0] for r in runs):.2f} s, first prediction after median "
                  f"{statistics.median(r[1] for r in runs):.2f} s (runs: "
                  f"{', '.join(f'{r[1]:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()
