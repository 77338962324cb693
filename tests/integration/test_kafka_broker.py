"""Against a real Kafka-protocol broker (the one `--broker` chooses) on 127.0.0.1, with kafka-python."""

import json

import pytest
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.contract import parse_event

# Tests join groups often: Tansu holds a JoinGroup for half the session timeout.
TEST_SETTINGS = dict(session_timeout_ms=2000, heartbeat_interval_ms=500)


@pytest.fixture(scope="module")
def broker(tmp_path_factory, start_broker):
    with start_broker(tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


def _consume(settings, topic, group, expected, commit=True):
    consumer = KafkaConsumer(**settings.consumer(group))
    consumer.subscribe([topic])
    seen = []
    for _ in range(100):
        for tp, records in consumer.poll(timeout_ms=500).items():
            seen += records
            if commit:
                consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)})
        if len(seen) >= expected:
            break
    consumer.close()
    return seen


def test_topics_are_created_once_with_their_partitions(broker):
    settings = KafkaSettings(broker.bootstrap_servers, **TEST_SETTINGS)
    assert ensure_topics(settings, {"events": 3, "predictions": 1}) == ["events", "predictions"]
    assert ensure_topics(settings, {"events": 3}) == []
    consumer = KafkaConsumer(**settings.client())
    assert consumer.partitions_for_topic("events") == {0, 1, 2}
    consumer.close()


def test_events_round_trip_and_a_group_resumes_from_its_committed_offsets(broker):
    settings = KafkaSettings(broker.bootstrap_servers, **TEST_SETTINGS)
    ensure_topics(settings, {"roundtrip": 1})
    producer = KafkaProducer(**settings.client())
    for i in range(10):
        producer.send("roundtrip", json.dumps({"id": i, "x": [float(i), 1.0], "label": "a/b"}).encode())
    producer.flush()
    first = _consume(settings, "roundtrip", "g1", expected=10)
    events = [parse_event(r.value, expected_shape=(2,)) for r in first]
    assert [e.id for e in events] == [str(i) for i in range(10)]
    for i in range(10, 15):
        producer.send("roundtrip", json.dumps({"id": i, "x": [0.0, 0.0]}).encode())
    producer.flush()
    producer.close()
    second = _consume(settings, "roundtrip", "g1", expected=5)
    assert [parse_event(r.value).id for r in second] == [str(i) for i in range(10, 15)]
    reader = KafkaConsumer(**settings.consumer("g1"))  # reads the group's offsets, joins nothing
    assert reader.committed(TopicPartition("roundtrip", 0)) == 15
    reader.close()


def test_the_producer_command_streams_a_dataset_in_hle_order(broker, tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
    done = subprocess.run([exe, "produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", "sim",
                           "--dataset", "synthetic", "--events", "120", "--unlabelled-fraction", "0.25"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    settings = KafkaSettings(broker.bootstrap_servers, **TEST_SETTINGS)
    records = _consume(settings, "sim", "reader", expected=120, commit=False)
    events = [parse_event(r.value, expected_shape=(32,)) for r in records]
    assert len(events) == 120
    labels = [e.label for e in events if e.label]
    assert 60 < len(labels) < 110  # about a quarter held back
    depths = [len(label.split("/")) for label in labels]
    assert depths == sorted(depths)  # multi-depth: coarse labels first, finer later


def test_committed_offsets_round_trip_and_apache_kafka_keeps_their_metadata(broker, broker_kind):
    """Why ``committed-offsets.json`` stays (docs/operating.md): Tansu drops a commit's metadata,
    Apache Kafka keeps it. The daemon relies on neither; this records what each broker does."""
    settings = KafkaSettings(broker.bootstrap_servers, **TEST_SETTINGS)
    ensure_topics(settings, {"metadata": 1})
    partition = TopicPartition("metadata", 0)
    consumer = KafkaConsumer(**settings.consumer("metadata-group"))
    consumer.assign([partition])
    consumer.commit({partition: OffsetAndMetadata(7, "model 1234", -1)})
    committed = consumer.committed(partition, metadata=True)
    consumer.close()
    print(f"{broker_kind} returns the commit as {committed}")
    assert committed.offset == 7
    if broker_kind == "apache-kafka":
        assert committed.metadata == "model 1234"
