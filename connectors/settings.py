"""kafka-python client settings: connection and security, plus consumer tuning.

The consumer defaults are measured against the local broker (Tansu): a short session (it holds every
JoinGroup for half the session timeout, so the 45 s default costs 22 s per join), a short
fetch wait (Tansu answers a waiting fetch only after about half of it), manual commits and
``earliest`` (``latest`` replays the last batch on Tansu). 6000/1000 ms stays valid on a real
Kafka cluster, whose minimum session timeout is 6000 ms by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

SETTING = "setting"
"""The field metadata key of a command-line setting (``setting``)."""


def setting(default: Any = None, help: str = "", *, option: str | None = None, type: Any = None,
            min: float | None = None, max: float | None = None, flag: bool = False,
            parse: Callable[[Any], Any] | None = None, shown: Callable[[Any], Any] | None = None,
            default_factory: Callable[[], Any] | None = None, secret: bool = False, env: str | None = None) -> Any:
    """A dataclass field that is also a command-line setting, declared once: its default and type
    are the field's; the option (``--name``), its ``HLE_NAME`` environment variable and its key in a
    config file are derived from the field's name (or ``option``). ``type``: the option's type
    where it is not the field's; ``parse``: option value -> field value, ``shown``: the reverse (for
    the option's default); ``flag``: a bare ``--name`` switch; ``secret``: masked when printed; ``env``:
    the environment variable where it is not ``HLE_NAME``."""
    metadata = {SETTING: {"help": help, "option": option, "type": type, "min": min, "max": max, "flag": flag,
                          "parse": parse, "shown": shown, "secret": secret, "env": env}}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = setting("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated.")
    security_protocol: str = setting("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = setting(None, "e.g. PLAIN, SCRAM-SHA-256.")
    sasl_username: str | None = setting(None)
    sasl_password: str | None = setting(None, secret=True)
    ssl_cafile: str | None = setting(None)
    ssl_certfile: str | None = setting(None)
    ssl_keyfile: str | None = setting(None)
    session_timeout_ms: int = setting(6000, "Consumer group session; the local broker holds each group join for half "
                                            "of it, so keep it short there.")
    heartbeat_interval_ms: int = setting(1000)
    fetch_max_wait_ms: int = 100
    broker_wait_seconds: float = setting(5.0, "At start, how long to wait for a broker before exiting with code 4 (a "
                                              "broker lost later is waited for, not ready meanwhile).", min=0.0)

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
