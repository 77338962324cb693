"""The daemon's learning rate and liveness while /predict is flooded; prints one JSON line.

    python benchmarks/http_load.py --clients 200 --seconds 60

A local broker holds a backlog of Fashion-MNIST events, so the daemon (``hle-stream run``, one
torch thread) trains flat out. For ``--seconds`` it learns alone, then for ``--seconds`` again
while ``--clients`` concurrent clients (asyncio, in a separate process) send maximum-size
``/predict`` bodies (256 events padded to the 1 MiB limit) back to back; a thread in this
process probes ``/healthz`` every 50 ms throughout. Learning throughput is the rate of
``hle_events_trained_total`` over each phase (scraped from ``/metrics``), reported as a ratio of
the two phases measured in this one run; resident memory is ``process_resident_memory_bytes``,
and the cores used by the daemon (``process_cpu_seconds_total``) and by the clients' process
say where the machine's two cores went.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from connectors.broker import LocalBroker, free_port  # noqa: E402

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
BODY_LIMIT = 1 << 20


def max_size_body() -> bytes:
    """256 valid 28×28 uint8 events padded so that the body is just under the 1 MiB limit."""
    rng = np.random.default_rng(0)
    image = base64.b64encode(rng.integers(0, 256, 784, dtype=np.uint8).tobytes()).decode()
    events = [{"id": f"q{i}", "x_b64": image, "dtype": "uint8", "shape": [1, 28, 28], "pad": ""} for i in range(256)]
    room = BODY_LIMIT - len(json.dumps(events)) - 512
    for event in events:
        event["pad"] = "p" * (room // len(events))
    return json.dumps(events).encode()


async def flood(port: int, clients: int, seconds: float, body: bytes) -> dict:
    """``clients`` connections each sending ``body`` back to back; counts answers by status."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head + body)
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 30)
                status = line.split(b" ")[1].decode() if line.count(b" ") >= 1 else "closed"
                writer.close()
            except (OSError, asyncio.TimeoutError, IndexError) as err:
                status = type(err).__name__
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    wanted = ("hle_events_trained_total", "process_resident_memory_bytes", 'hle_events_predicted_total{source="http"}',
              "process_cpu_seconds_total")
    values = {}
    for line in text.splitlines():
        for name in wanted:
            if line.startswith(name + " "):
                values[name] = float(line.split()[-1])
    return values


class HealthProbe(threading.Thread):
    """GET /healthz every 50 ms; latencies in ms (a failure counts as 5000)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.latencies, self.failures, self.stop = port, [], 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as answer:
                    answer.read()
                self.latencies.append(1000 * (time.perf_counter() - started))
            except OSError:
                self.failures += 1
                self.latencies.append(5000.0)


def phase(port: int, seconds: float) -> dict:
    """Trained events/s and the largest RSS over ``seconds``, from /metrics once a second."""
    first = scrape(port)
    started, rss = time.monotonic(), [first["process_resident_memory_bytes"]]
    while time.monotonic() - started < seconds:
        time.sleep(1.0)
        rss.append(scrape(port)["process_resident_memory_bytes"])
    last = scrape(port)
    elapsed = time.monotonic() - started
    return {"trained_per_s": (last["hle_events_trained_total"] - first["hle_events_trained_total"]) / elapsed,
            "daemon_cores": (last["process_cpu_seconds_total"] - first["process_cpu_seconds_total"]) / elapsed,
            "rss_max_mb": max(rss) / 2**20,
            "http_predicted": last.get('hle_events_predicted_total{source="http"}', 0)
            - first.get('hle_events_predicted_total{source="http"}', 0)}


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--events", type=int, default=40_000, help="backlog produced before the daemon starts")
    parser.add_argument("--predict-share", type=float, default=None, help="the daemon's --http-predict-share")
    parser.add_argument("--flood-only", nargs=3, metavar=("PORT", "CLIENTS", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood_only:  # the load generator's own process
        port, clients, seconds = int(args.flood_only[0]), int(args.flood_only[1]), float(args.flood_only[2])
        print(json.dumps(asyncio.run(flood(port, clients, seconds, max_size_body()))), flush=True)
        return
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as workdir:
        subprocess.run([EXE, "produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", "load",
                        "--dataset", "fashion-mnist", "--events", str(args.events)], check=True,
                       stderr=subprocess.DEVNULL)
        port = free_port()
        daemon = subprocess.Popen(
            [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", "load",
             "--checkpoint-dir", f"{workdir}/ckpt", "--http-port", str(port), "--session-timeout-ms", "2000",
             "--heartbeat-interval-ms", "500",
             *(["--http-predict-share", str(args.predict_share)] if args.predict_share is not None else [])],
            stderr=open(f"{workdir}/daemon.log", "wb"), env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if scrape(port).get("hle_events_trained_total", 0) > 500:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit(f"the daemon did not start learning; see {workdir}/daemon.log")
                time.sleep(1.0)
            probe = HealthProbe(port)
            probe.start()
            unloaded = phase(port, args.seconds)
            quiet_latencies, probe.latencies = probe.latencies, []
            generator = subprocess.Popen([sys.executable, __file__, "--flood-only", str(port), str(args.clients),
                                          str(args.seconds)], stdout=subprocess.PIPE, text=True)
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            loaded = phase(port, args.seconds)
            statuses = json.loads(generator.communicate(timeout=120)[0].strip().splitlines()[-1])
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the generator, once reaped
            client_cores = (children_after.ru_utime + children_after.ru_stime - children_before.ru_utime
                            - children_before.ru_stime) / args.seconds
            probe.stop.set()
            alive = daemon.poll() is None
        finally:
            daemon.terminate()
            daemon.wait(60)
    print(json.dumps({
        "clients": args.clients, "seconds_per_phase": args.seconds, "predict_share": args.predict_share,
        "daemon_alive": alive,
        "trained_per_s_unloaded": round(unloaded["trained_per_s"], 1),
        "trained_per_s_loaded": round(loaded["trained_per_s"], 1),
        "learning_ratio_loaded_to_unloaded": round(loaded["trained_per_s"] / unloaded["trained_per_s"], 3),
        "healthz_p99_ms_unloaded": round(p99(quiet_latencies), 1), "healthz_p99_ms_loaded": round(p99(probe.latencies), 1),
        "healthz_failures": probe.failures, "healthz_probes_loaded": len(probe.latencies),
        "rss_max_mb_unloaded": round(unloaded["rss_max_mb"], 1), "rss_max_mb_loaded": round(loaded["rss_max_mb"], 1),
        "daemon_cores_unloaded": round(unloaded["daemon_cores"], 2), "daemon_cores_loaded": round(loaded["daemon_cores"], 2),
        "client_cores_loaded": round(client_cores, 2),
        "http_events_predicted_loaded": loaded["http_predicted"], "http_answers_by_status": statuses,
    }), flush=True)


if __name__ == "__main__":
    main()
