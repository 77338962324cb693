"""The daemon as a user runs it (``hle-stream run``), against the real local broker."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.service.checkpoint import decode
from hle_stream.service.lineage import read_ids

FAST_GROUP = dict(session_timeout_ms=2000, heartbeat_interval_ms=500)
EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")


@pytest.fixture(scope="module")
def broker(tmp_path_factory, start_broker):
    with start_broker(tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


def _produce_synthetic(broker, topic, count, seed):
    done = subprocess.run([EXE, "produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                           "--dataset", "synthetic", "--events", str(count), "--seed", str(seed)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _read_all(broker, topic, expected, timeout=60):
    consumer = KafkaConsumer(**KafkaSettings(broker.bootstrap_servers).client(), auto_offset_reset="earliest",
                             fetch_max_wait_ms=100)
    consumer.assign([TopicPartition(topic, 0)])
    values, deadline = [], time.monotonic() + timeout
    while len(values) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=300).values():
            values += [json.loads(r.value) for r in records]
    consumer.close()
    return values


def _start_daemon(broker, tmp_path, topic, http_port=0):
    args = [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic,
            "--http-port", str(http_port),
            "--predictions-topic", f"{topic}-pred", "--dead-letter-topic", f"{topic}-dlq", "--group-id", f"{topic}-g",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every-events", "50", "--memory-size", "64",
            "--session-timeout-ms", str(FAST_GROUP["session_timeout_ms"]),
            "--heartbeat-interval-ms", str(FAST_GROUP["heartbeat_interval_ms"])]
    return subprocess.Popen(args, stderr=open(tmp_path / "daemon.log", "ab"), env={"OMP_NUM_THREADS": "1", **__import__("os").environ})


def _stop(process):
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert process.wait(30) == 0
    return time.monotonic() - started


def test_events_in_predictions_and_dead_letters_out_and_a_restart_resumes_from_the_checkpoint(broker, tmp_path):
    topic = "daemon-e2e"
    # made before any reader asks for them: Tansu auto-creates unknown topics with 4 partitions
    ensure_topics(KafkaSettings(broker.bootstrap_servers), {topic: 1, f"{topic}-pred": 1, f"{topic}-dlq": 1})
    _produce_synthetic(broker, topic, 240, seed=0)
    bad = [b"not json", b'{"id": 1}', b'{"id": 2, "x": [1, 2]}', b'{"id": 3, "x": [' + b"1," * 31 + b'NaN]}',
           json.dumps({"id": 4, "x": [0.0] * 32, "label": "a//b"}).encode()]
    producer = KafkaProducer(**KafkaSettings(broker.bootstrap_servers).client())
    for value in bad:
        producer.send(topic, value)
    producer.flush()

    daemon = _start_daemon(broker, tmp_path, topic)
    predictions = _read_all(broker, f"{topic}-pred", 240)
    dead = _read_all(broker, f"{topic}-dlq", 5)
    assert _stop(daemon) < 60  # a safety limit on a loaded machine, not a performance claim

    assert len(predictions) == 240
    assert [int(p["id"].split("-")[0]) for p in predictions] == list(range(240))  # stream order, once each
    late = predictions[-1]
    assert late["path"] and late["path"][0]["level"] == 1 and late["model_version"] > 0
    assert [d["reason"] for d in dead] == ["not_json", "missing_field", "wrong_shape", "non_finite", "bad_label"]
    assert [d["offset"] for d in dead] == [240, 241, 242, 243, 244]

    checkpoints = sorted((tmp_path / "ckpt").glob("checkpoint-*.pt"))
    state = decode(checkpoints[-1].read_bytes())
    assert state["offsets"] == {0: 245}
    reader = KafkaConsumer(**KafkaSettings(broker.bootstrap_servers).consumer(f"{topic}-g"))
    assert reader.committed(TopicPartition(topic, 0)) == 245  # committed what the checkpoint covers
    reader.close()
    trained = state["learner"]["counters"]["seen"]
    assert trained == 240

    _produce_synthetic(broker, topic, 60, seed=1)
    daemon = _start_daemon(broker, tmp_path, topic)
    everything = _read_all(broker, f"{topic}-pred", 300)
    _stop(daemon)
    assert len(everything) == 300  # the restart predicted only the 60 new events
    assert [int(p["id"].split("-")[0]) for p in everything[240:]] == list(range(60))  # the new stream only
    state = decode(sorted((tmp_path / "ckpt").glob("checkpoint-*.pt"))[-1].read_bytes())
    assert state["offsets"] == {0: 305}
    assert state["learner"]["counters"]["seen"] == 300  # every labelled event trained once in the lineage


def test_the_daemon_serves_predictions_health_and_readiness_over_http(broker, tmp_path):
    import urllib.error
    import urllib.request

    from connectors.broker import free_port

    topic = "daemon-http"
    ensure_topics(KafkaSettings(broker.bootstrap_servers), {topic: 1, f"{topic}-pred": 1, f"{topic}-dlq": 1})
    _produce_synthetic(broker, topic, 240, seed=0)  # 20 per class of the 12
    port = free_port()
    daemon = _start_daemon(broker, tmp_path, topic, http_port=port)
    try:
        assert len(_read_all(broker, f"{topic}-pred", 240)) == 240
        base = f"http://127.0.0.1:{port}"

        def call(path, body=None):
            request = urllib.request.Request(base + path, data=body, method="POST" if body else "GET")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        assert call("/healthz")[0] == 200
        assert call("/readyz") == (200, {"ready": True, "model": True, "loop": True, "kafka": True, "finite": True,
                                         "checkpoint": True, "not_fenced": True})
        status, answer = call("/predict", json.dumps([{"id": "q1", "x": [0.0] * 32}, {"id": "q2", "x": [1.0] * 32}]).encode())
        assert status == 200
        assert [p["id"] for p in answer["predictions"]] == ["q1", "q2"]
        assert answer["predictions"][0]["model_version"] > 0
        levels = [step["level"] for step in answer["predictions"][0]["path"]]
        assert levels == list(range(1, len(levels) + 1))
        assert call("/predict", json.dumps({"id": "bad", "x": [0.0] * 5}).encode())[0:1] == (400,)
        assert call("/predict", json.dumps({"id": "bad", "x": [0.0] * 5}).encode())[1]["error"] == "wrong_shape"
    finally:
        _stop(daemon)


def test_a_second_member_in_the_group_is_reported_and_its_partitions_offsets_are_never_moved_back(broker, tmp_path):
    from kafka import KafkaAdminClient

    topic, group = "daemon-split", "daemon-split-g"
    settings = KafkaSettings(broker.bootstrap_servers)
    ensure_topics(settings, {topic: 2, f"{topic}-pred": 1, f"{topic}-dlq": 1})
    producer = KafkaProducer(**settings.client())
    for i in range(400):
        producer.send(topic, json.dumps({"id": f"s{i}", "x": [float(i % 7)] * 32}).encode(), partition=i % 2)
    producer.flush()
    metrics_port = __import__("connectors.broker", fromlist=["free_port"]).free_port()
    daemon = subprocess.Popen(
        [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic, "--group-id", group,
         "--predictions-topic", f"{topic}-pred", "--dead-letter-topic", f"{topic}-dlq", "--input-partitions", "2",
         "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every-seconds", "0.5",
         "--http-port", str(metrics_port), "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500"],
        stderr=open(tmp_path / "daemon.log", "ab"), env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    admin = KafkaAdminClient(**settings.client())

    def committed() -> dict[int, int]:
        offsets = admin.list_group_offsets(group)
        offsets = offsets.get(group, offsets)
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    try:
        deadline = time.monotonic() + 120
        while committed() != {0: 200, 1: 200}:  # the daemon alone has both partitions and consumed them
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.2)
        # a second member joins and takes a partition; events arrive that only it reads, and it commits them
        member = KafkaConsumer(**settings.consumer(group))
        member.subscribe([topic])
        deadline = time.monotonic() + 120
        while not member.assignment():
            assert time.monotonic() < deadline
            member.poll(timeout_ms=200)
        (theirs,) = member.assignment()
        for i in range(400, 480):
            producer.send(topic, json.dumps({"id": f"s{i}", "x": [0.0] * 32}).encode(), partition=i % 2)
        producer.flush()
        while member.position(theirs) < 240:
            assert time.monotonic() < deadline
            member.poll(timeout_ms=200)
        member.commit()
        # then the daemon keeps learning on its own partition and checkpointing (and committing)
        ours, history = 1 - theirs.partition, []
        for burst in range(5):
            for i in range(10):
                producer.send(topic, json.dumps({"id": f"t{burst}-{i}", "x": [0.0] * 32}).encode(), partition=ours)
            producer.flush()
            for _ in range(5):
                member.poll(timeout_ms=200)  # stays in the group, commits nothing more
                history.append(committed())
        while history[-1].get(ours) != 240 + 50:  # the daemon committed its own partition as it went
            assert time.monotonic() < deadline
            member.poll(timeout_ms=200)
            history.append(committed())
        member.close()
    finally:
        _stop(daemon)
        admin.close()
    assert history[-1][theirs.partition] == 240  # what the member committed stands
    for earlier, later in zip(history, history[1:]):  # no commit of the daemon moved the member's offset back
        assert all(later.get(p, 0) >= offset for p, offset in earlier.items()), (earlier, later)
    assert "holds only partitions" in (tmp_path / "daemon.log").read_text()


def test_four_partitions_and_a_member_joining_and_leaving_mid_stream_lose_nothing_and_train_nothing_twice(
        broker, tmp_path):
    """One daemon holds all 4 partitions; a second consumer joins the group (taking partitions and
    reading from the group's offsets, which lag the daemon's), commits nothing and leaves. The
    daemon resumes each partition it gets back where its model left it, so every event is learned
    exactly once, and the group's committed offsets never move back."""
    from kafka import KafkaAdminClient

    topic, group = "daemon-rebalance", "daemon-rebalance-g"
    settings = KafkaSettings(broker.bootstrap_servers, **FAST_GROUP)
    ensure_topics(settings, {topic: 4, f"{topic}-pred": 1, f"{topic}-dlq": 1})
    producer = KafkaProducer(**settings.client())
    labels = ["a", "b", "a/x", "b/y", "a/x/1", "b/y/2"]
    produced: list[str] = []

    def produce(count: int) -> None:
        for _ in range(count):
            i = len(produced)
            produced.append(f"r{i}")
            event = {"id": f"r{i}", "x": [float((i * 5 + k) % 7) for k in range(32)], "label": labels[i % 6]}
            producer.send(topic, json.dumps(event).encode(), partition=i % 4)
        producer.flush()

    trained_log = tmp_path / "trained.log"
    metrics_port = __import__("connectors.broker", fromlist=["free_port"]).free_port()
    daemon = subprocess.Popen(
        [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", topic, "--group-id", group,
         "--predictions-topic", f"{topic}-pred", "--dead-letter-topic", f"{topic}-dlq", "--input-partitions", "4",
         "--checkpoint-dir", str(tmp_path / "ckpt"), "--memory-size", "64", "--trained-ids-log", str(trained_log),
         # rare checkpoints: the group's offsets lag far behind what the model has learned
         "--checkpoint-every-events", "700", "--checkpoint-every-seconds", "600", "--http-port", str(metrics_port),
         "--dedupe-window", "0",  # the resume rule alone keeps events from being learned twice
         "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500"],
        stderr=open(tmp_path / "daemon.log", "ab"), env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    admin = KafkaAdminClient(**settings.client())
    history: list[dict[int, int]] = []

    def record_committed() -> dict[int, int]:
        offsets = admin.list_group_offsets(group)
        offsets = offsets.get(group, offsets)
        history.append({tp.partition: meta.offset for tp, meta in offsets.items()})
        return history[-1]

    def trained_so_far() -> float:  # the log is appended at each checkpoint; the metric at once
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        except OSError:
            return 0.0
        match = re.search(r"^hle_events_trained_total (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    try:
        produce(800)
        deadline = time.monotonic() + 180
        while trained_so_far() < 300:  # mid-stream
            assert time.monotonic() < deadline and daemon.poll() is None, "the daemon did not get going"
            record_committed()
            time.sleep(0.2)
        member = KafkaConsumer(**settings.consumer(group))
        member.subscribe([topic])
        read_by_member = 0
        while not member.assignment():
            assert time.monotonic() < deadline, "the second member never got partitions"
            read_by_member += sum(len(r) for r in member.poll(timeout_ms=200).values())
            record_committed()
        produce(800)  # events arrive while the group is split
        for _ in range(15):
            read_by_member += sum(len(r) for r in member.poll(timeout_ms=200).values())
            record_committed()
        member.close()  # leaves without committing: its partitions go back to the daemon
        produce(400)
        while trained_so_far() < len(produced):
            assert time.monotonic() < deadline and daemon.poll() is None, (trained_so_far(), history[-1:])
            record_committed()
            time.sleep(0.2)
    finally:
        _stop(daemon)  # its final checkpoint commits the rest
        producer.close()
    try:
        assert record_committed() == {p: 500 for p in range(4)}
    finally:
        admin.close()
    ids = read_ids(trained_log)
    assert read_by_member > 0  # the member really read partitions the daemon had been reading
    assert set(ids) == set(produced)  # 0 lost
    assert len(ids) == len(set(ids))  # 0 trained twice
    for earlier, later in zip(history, history[1:]):
        assert all(later.get(p, 0) >= offset for p, offset in earlier.items()), (earlier, later)
    assert "holds only partitions" in (tmp_path / "daemon.log").read_text()
