"""A real Apache Kafka broker for tests: one KRaft node (broker and controller) on loopback.

Its jars come from Maven Central: ``apache-kafka-pom.xml`` pins ``org.apache.kafka:kafka_2.13``;
Maven resolves it and its runtime dependencies once, checking every artifact's checksum
(``--strict-checksums``), into ``~/.cache/hle-stream/apache-kafka/<version>`` (under
``HLE_CACHE_DIR`` when set). Each broker formats a fresh storage directory with a new cluster id,
starts ``kafka.Kafka`` with ``java``, and is ready once it answers a metadata request; it stops on
SIGTERM (SIGKILL after 20 s). Needs a JDK 17+ and Maven (``mvn``) on the PATH.

``BROKER_SETTINGS`` are the broker settings the tests run with; ``ops/docker-compose.yml`` sets
the same (``tests/unit/test_ops_files.py`` holds them together).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from connectors.broker import free_port

POM = Path(__file__).with_name("apache-kafka-pom.xml")
VERSION = re.search(r"<artifactId>kafka_2.13</artifactId>\s*<version>([^<]+)</version>", POM.read_text()).group(1)
START_TIMEOUT_S = 90.0  # a JVM on a loaded 2-core machine: about 8 s here, far more under load
STOP_TIMEOUT_S = 20.0

BROKER_SETTINGS = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    # The tests' consumer groups use sessions down to 2 s to fail over fast; Apache Kafka's default
    # minimum is 6 s (production keeps it, and the daemon's default session of 6 s is within it).
    "group.min.session.timeout.ms": "1000",
}


class ApacheKafkaUnavailable(RuntimeError):
    """The broker could not be fetched or started; the message says why."""


def _cache() -> Path:
    root = Path(os.environ.get("HLE_CACHE_DIR", Path.home() / ".cache" / "hle-stream"))
    return root / "apache-kafka" / VERSION


def broker_jars() -> Path:
    """The folder of the broker's jars, resolved by Maven the first time (about 20 s, 43 MB)."""
    libs = _cache() / "libs"
    if (libs / f"kafka_2.13-{VERSION}.jar").exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise ApacheKafkaUnavailable("Apache Kafka for the tests needs java (17+) and mvn on the PATH")
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=_cache().parent if _cache().parent.exists() else None))
    done = subprocess.run(["mvn", "-q", "-B", "--strict-checksums", "-f", str(POM), "dependency:copy-dependencies",
                           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ApacheKafkaUnavailable(f"Maven could not resolve kafka_2.13 {VERSION}: {(done.stdout + done.stderr)[-2000:]}")
    libs.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


class ApacheKafka:
    """Start with ``with ApacheKafka() as broker: broker.bootstrap_servers``; stopped and its
    storage removed on exit. The same face as ``connectors.broker.LocalBroker`` (Tansu)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.controller_port = free_port()
        self.log_path = log_path
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self, data: Path) -> str:
        settings = {**BROKER_SETTINGS, "node.id": "1", "log.dirs": str(data),
                    "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def start(self) -> "ApacheKafka":
        """Start on fresh storage, or, after ``kill()``, again on the same port and storage."""
        classpath = f"{broker_jars()}/*"
        if self.workdir is None:
            self.workdir = self._format(classpath)
        properties = self.workdir / "server.properties"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(["java", "-Xmx512m", "-cp", classpath, "kafka.Kafka", str(properties)],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ApacheKafkaUnavailable(f"the broker exited at start with code {self.process.returncode} "
                                             f"(log: {self.log_path})")
            if _answers(self.bootstrap_servers):
                return self
            time.sleep(0.25)
        self.stop()
        raise ApacheKafkaUnavailable(f"the broker did not answer on {self.bootstrap_servers} within "
                                     f"{START_TIMEOUT_S:.0f} s (log: {self.log_path})")

    def _format(self, classpath: str) -> Path:
        workdir = Path(tempfile.mkdtemp(prefix="apache-kafka-"))
        properties = workdir / "server.properties"
        properties.write_text(self._properties(workdir / "data"))
        formatted = subprocess.run(["java", "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
                                    "-t", _cluster_id(), "-c", str(properties)], capture_output=True, text=True,
                                   timeout=120)
        if formatted.returncode != 0:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ApacheKafkaUnavailable(f"formatting the broker's storage failed: {formatted.stderr[-2000:]}")
        return workdir

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crashed broker would; its storage stays for ``start()``."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "ApacheKafka":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never starting with
    ``-`` (the storage tool would read it as an option: Kafka's own ``random-uuid`` avoids it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _answers(bootstrap_servers: str) -> bool:
    """Whether the broker answers a metadata request (it listens before it can serve one)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
