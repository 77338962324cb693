"""kafka-python client settings: connection and security, plus consumer tuning.

The consumer defaults are measured against the local broker (Tansu): a short session (it holds every
JoinGroup for half the session timeout, so the 45 s default costs 22 s per join), a short
fetch wait (Tansu answers a waiting fetch only after about half of it), manual commits and
``earliest`` (``latest`` replays the last batch on Tansu). 6000/1000 ms stays valid on a real
Kafka cluster, whose minimum session timeout is 6000 ms by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    fetch_max_wait_ms: int = 100
    broker_wait_seconds: float = 5.0  # at start: how long to wait for a broker before giving up

    def client(self) -> dict[str, Any]:
        """Options every kafka-python client (consumer, producer, admin) takes."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers.split(","),
                                   "security_protocol": self.security_protocol}
        optional = {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.sasl_username,
                    "sasl_plain_password": self.sasl_password, "ssl_cafile": self.ssl_cafile,
                    "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile}
        options.update({k: v for k, v in optional.items() if v is not None})
        return options

    def consumer(self, group_id: str) -> dict[str, Any]:
        return {**self.client(), "group_id": group_id, "enable_auto_commit": False,
                "auto_offset_reset": "earliest", "session_timeout_ms": self.session_timeout_ms,
                "heartbeat_interval_ms": self.heartbeat_interval_ms, "fetch_max_wait_ms": self.fetch_max_wait_ms}
