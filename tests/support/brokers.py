"""The brokers the Kafka-facing tests and benchmarks run against, one face for both: Tansu (the
local broker ``hle-stream`` ships) and Apache Kafka 4.x (``tests.support.apache_kafka``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BROKERS = ("tansu", "apache-kafka")


@contextlib.contextmanager
def running_broker(kind: str, log_path: Path, durable: bool = False) -> Iterator[Any]:
    """A started broker of ``kind`` (``LocalBroker`` or ``ApacheKafka``: ``bootstrap_servers``,
    ``kill()``, ``start()``, ``stop()``), stopped after. ``durable=True``: it keeps its log across
    ``kill()`` and ``start()`` (Tansu on a loopback S3; Apache Kafka always does). Raises
    ``ApacheKafkaUnavailable`` when Apache Kafka cannot be fetched or started. (Imports lazily: the
    unit tier's conftest reads ``BROKERS`` and needs no broker.)"""
    if kind not in BROKERS:
        raise ValueError(f"unknown broker {kind!r}; one of {', '.join(BROKERS)}")
    with contextlib.ExitStack() as stack:
        if kind == "apache-kafka":
            from tests.support.apache_kafka import ApacheKafka

            broker: Any = ApacheKafka(log_path=log_path)
        else:
            from connectors.broker import LocalBroker

            env, storage = {}, None
            if durable:
                from tests.support.fault_injection import S3Emulator

                s3 = S3Emulator(log_path.parent)
                stack.callback(s3.stop)
                env, storage = s3.env, "s3://tansu/"
            broker = LocalBroker(log_path=log_path, storage=storage, env=env)
        stack.callback(broker.stop)
        broker.start()
        yield broker
