"""Shared fixtures, and the tiers: ``tests/unit`` (no subprocess, no broker, no network: the fast
check after any change) and ``tests/integration`` (real brokers, daemons, Prometheus, the CLI as a
user runs it). Each test is marked with its tier (``-m unit``, ``-m integration``)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from pathlib import Path

import pytest
import torch

from hle_stream.core.config import LearnerConfig
from tests.support.brokers import BROKERS, running_broker

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HLE_DATA_ROOT", REPO.parent / "shared" / "data"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--broker", choices=BROKERS, default=os.environ.get("HLE_TEST_BROKER", "tansu"),
                     help="the Kafka-protocol broker the integration tests run against: tansu (the local broker "
                          "hle-stream ships) or apache-kafka (Apache Kafka 4.x from Maven Central, see "
                          "tests/support/apache_kafka.py); env HLE_TEST_BROKER")


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--broker")


@pytest.fixture(scope="session")
def start_broker(broker_kind: str):
    """``with start_broker(log_path) as broker:`` a running broker of the chosen kind, stopped after;
    ``durable=True`` keeps its log across ``broker.kill()`` and ``broker.start()``. Apache Kafka
    that cannot start fails the test with the reason, never skips it."""
    from tests.support.apache_kafka import ApacheKafkaUnavailable

    @contextlib.contextmanager
    def running(log_path: Path, durable: bool = False):
        try:
            with running_broker(broker_kind, log_path, durable) as broker:
                yield broker
        except ApacheKafkaUnavailable as err:
            pytest.fail(f"--broker apache-kafka was asked for and it cannot start: {err}", pytrace=False)
    return running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test with its tier, and with ``broker`` when it talks to the broker ``--broker`` chooses."""
    for item in items:
        tier = Path(str(item.path)).relative_to(REPO).parts
        if tier[:2] in (("tests", "unit"), ("tests", "integration")):
            item.add_marker(getattr(pytest.mark, tier[1]))
        if "start_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def small_config() -> LearnerConfig:
    return LearnerConfig(memory_size=16, batch_size=8, online_iter=1.0, importance_period=2, seed=0, device="cpu")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


def _children() -> set[int]:
    """Processes whose parent is this test process (read from /proc: no dependency needed)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                children.add(int(entry.name))
    return children


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def _no_orphans():
    """Every process a test starts (daemons, brokers, Prometheus) is gone when the test ends,
    also when it fails; and when the whole run is interrupted (atexit)."""
    before = _children()
    yield
    _kill(_children() - before)


atexit.register(lambda: _kill(_children()))
