"""Health probes while slow clients hold the daemon's connections; prints one JSON line.

    python benchmarks/probe_flood.py --slow-clients 600 --probes 60

A daemon (``hle-stream run`` on a local broker) serves HTTP with its default cap of 512 open
connections. ``--slow-clients`` sockets connect and trickle one byte every half second (a
request head that never ends), reconnecting whenever they are closed; meanwhile a probe asks
``GET /healthz`` every 100 ms with a 1 s timeout. Reports the share of probes answered 200.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import repo_root  # noqa: F401

from connectors.broker import LocalBroker, free_port

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")


def healthz(port: int, timeout_s: float) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        connection.request("GET", "/healthz")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def trickle(port: int, clients: int, stop: threading.Event) -> None:
    sockets: list[socket.socket] = []
    while not stop.is_set():
        while len(sockets) < clients and not stop.is_set():
            try:
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                time.sleep(0.01)
        for sock in list(sockets):
            try:
                sock.sendall(b"G")
            except OSError:
                sockets.remove(sock)
                sock.close()
        stop.wait(0.5)
    for sock in sockets:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow-clients", type=int, default=600)
    parser.add_argument("--probes", type=int, default=60)
    args = parser.parse_args()
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        daemon = subprocess.Popen([EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic",
                                   "probe-flood", "--checkpoint-dir", f"{workdir}/ckpt", "--http-port", str(port)],
                                  stderr=open(f"{workdir}/daemon.log", "wb"), env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            deadline = time.monotonic() + 120
            while not healthz(port, 1.0):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the daemon did not answer /healthz; see {workdir}/daemon.log")
                time.sleep(0.2)
            stop = threading.Event()
            flood = threading.Thread(target=trickle, args=(port, args.slow_clients, stop), daemon=True)
            flood.start()
            time.sleep(3)  # every slot taken
            answered = 0
            for _ in range(args.probes):
                answered += healthz(port, 1.0)
                time.sleep(0.1)
            stop.set()
            flood.join(10)
        finally:
            daemon.terminate()
            daemon.wait(60)
    print(json.dumps({"slow_clients": args.slow_clients, "probes": args.probes, "answered_200_within_1s": answered,
                      "share": round(answered / args.probes, 3)}))


if __name__ == "__main__":
    main()
