"""Output records fit Kafka's limit by construction, and one Kafka still refuses as too large is
dropped and counted, never retried forever (a real broker)."""

import base64
import json

import pytest

from connectors.kafka_io import Publisher, dead_letter_value
from connectors.memory import RawRecord
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics


@pytest.mark.parametrize("size", [0, 100, 700_000, 800_000, 5_000_000])
def test_a_dead_letter_fits_the_limit_and_keeps_as_much_of_the_value_as_fits(size):
    raw = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    value = dead_letter_value(RawRecord("in", 3, 42, raw), "too_large", "é" * 5000, max_bytes=1_000_000)
    document = json.loads(value)
    assert len(value) <= 1_000_000
    assert (document["topic"], document["partition"], document["offset"]) == ("in", 3, 42)
    assert document["value_bytes"] == size and len(document["detail"]) == 1000
    kept = base64.b64decode(document["value_b64"])
    assert raw.startswith(kept) and document["value_truncated"] == (len(kept) < size)
    assert document["value_truncated"] == (size >= 800_000)  # 700 kB still fits once base64-encoded


def test_a_record_too_large_for_kafka_is_dropped_and_counted_and_delivery_goes_on(tmp_path, start_broker):
    with start_broker(tmp_path / "broker.log") as broker:
        settings = KafkaSettings(broker.bootstrap_servers)
        ensure_topics(settings, {"pred": 1, "dlq": 1})
        dropped = []
        publisher = Publisher(settings, "pred", "dlq", max_output_bytes=20_000,
                              on_dropped=lambda topic, size, reason: dropped.append((topic, size)))
        publisher.prediction({"id": "ok-1", "path": []})
        publisher._send("pred", b"x" * 100_000)  # past the producer's limit: what no record should be
        publisher.prediction({"id": "ok-2", "path": []})
        publisher.deliver_all(stopping=lambda: True)  # would raise DeliveryAborted if anything were retried
        publisher.close()
    assert dropped == [("pred", 100_000)]
    assert publisher.healthy
