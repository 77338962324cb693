"""Label events through a real broker and the daemon as a user runs it."""

from __future__ import annotations

import base64
import json
import subprocess

from kafka import KafkaProducer

from connectors.kafka_io import read_topic
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.service.checkpoint import decode
from tests.support.fault_injection import EXE, FAST_GROUP, labelled_stream


def test_through_kafka_every_label_within_the_window_is_joined_and_exactly_the_late_ones_expire(tmp_path, start_broker):
    events = labelled_stream(3000)
    late = {e["id"] for i, e in enumerate(events) if i % 10 == 0 and i < 300}  # 2,600 events late: past the window
    order: list[tuple[int, dict]] = []  # (position among the features, record)
    for i, event in enumerate(events):
        order.append((i, {k: v for k, v in event.items() if k != "label"}))
        order.append((i + (2600 if event["id"] in late else 500) + 0.5, {"id": event["id"], "label": event["label"]}))
    records = [record for _, record in sorted(order, key=lambda pair: pair[0])]
    with start_broker(tmp_path / "broker.log") as broker:
        settings = KafkaSettings(broker.bootstrap_servers)
        ensure_topics(settings, {"in": 1, "out": 1, "dlq": 1})
        producer = KafkaProducer(**settings.client(), linger_ms=20, batch_size=262_144)
        for record in records:
            producer.send("in", json.dumps(record).encode())
        producer.flush()
        producer.close()
        done = subprocess.run([EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", "in",
                               "--predictions-topic", "out", "--dead-letter-topic", "dlq", "--group-id", "g",
                               "--checkpoint-dir", str(tmp_path / "ckpt"), "--join-window", "2000",
                               "--max-events", str(len(records)), "--http-port", "0", *FAST_GROUP],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        dead = [json.loads(r.value) for r in read_topic(settings, "dlq", follow=False)]
    assert sorted(d["reason"] for d in dead) == ["label_expired"] * len(late)
    assert {json.loads(base64.b64decode(d["value_b64"]))["id"] for d in dead} == late
    state = decode(sorted((tmp_path / "ckpt").glob("checkpoint-*.pt"))[-1].read_bytes())
    assert state["learner"]["counters"]["seen"] == 3000 - len(late)  # every other label joined and learned
    accuracy = PrequentialAccuracy.from_state_dict(state["prequential"]).anytime_accuracy()
    print("prequential accuracy per level, labels 500 events late:", {lv: round(a, 3) for lv, a in accuracy.items()})
    assert set(accuracy) == {1, 2, 3}
