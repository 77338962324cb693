"""Fault injection against the real daemon (``hle-stream run`` processes) and a real broker: the
scenarios ``benchmarks/reliability.py`` prints figures for and ``tests/integration/test_reliability.py``
asserts on, in one place.

- kills: N SIGKILLs at random moments during a stream of M labelled events (one checkpoint
  corrupted on the way) → events lost and trained twice, from the daemon's own record of the ids
  in its model's lineage (``--trained-ids-log``) compared with what was produced;
- malformed: K malformed records of every kind interleaved with valid events → dead-lettered by
  reason, crashes, valid events lost;
- adversarial: an attacker's records (crash-loop bytes, output too large for Kafka, poison
  features, unclean labels, duplicate ids, an empty-featured first record) while the disk refuses
  checkpoints, /predict is abused and a second daemon tries the same checkpoint directory →
  dead letters by reason, crashes, stalls, valid events lost, non-finite weights;
- sigterm: SIGTERM while the daemon streams at full speed → seconds to exit, exit code, checkpoint;
- outage: the broker killed mid-stream and restarted S seconds later (Tansu on its ``s3://``
  engine over a loopback ``moto_server``, so its data survives) → readiness meanwhile, recovery
  time, events lost or trained twice.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.broker import LocalBroker, free_port
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.eval.datasets.synthetic import make_synthetic
from hle_stream.eval.producer_sim import simulated_events, with_delayed_labels
from hle_stream.service.checkpoint import decode
from hle_stream.service.lineage import read_ids

EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
DIM = 32  # the synthetic features
CLASSES = 21  # the synthetic tree: 3 + 6 + 12
FAST_GROUP = ["--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500"]


def labelled_stream(count: int, seed: int = 0) -> list[dict]:
    """``count`` synthetic HLE events (multi-depth, ids unique), every one labelled."""
    per_leaf = -(-count // 12) + 1
    dataset = make_synthetic(train_per_leaf=per_leaf, test_per_leaf=1, seed=seed)
    stream = list(simulated_events(dataset, "multi-depth", seed))[:count]
    assert len(stream) == count, (len(stream), count)
    return stream


@dataclass
class DaemonRun:
    """One stream's topics, checkpoint directory and trained-ids log, and the processes run on it."""

    broker: LocalBroker
    workdir: Path
    topic: str
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.settings = KafkaSettings(self.broker.bootstrap_servers)
        # the input topic takes records larger than the daemon's limit (the adversarial scenario sends 4.5 MB):
        # Apache Kafka's default limit is 1 MB
        ensure_topics(self.settings, {self.topic: 1, self.predictions: 1, self.dead_letters: 1},
                      configs={self.topic: {"max.message.bytes": str(8 << 20)}})
        self.workdir.mkdir(parents=True, exist_ok=True)

    predictions = property(lambda self: f"{self.topic}-pred")
    dead_letters = property(lambda self: f"{self.topic}-dlq")
    checkpoints = property(lambda self: self.workdir / "ckpt")
    lineage = property(lambda self: self.workdir / "trained-ids.log")

    def start(self, file_size_limit: int | None = None) -> None:
        """Start ``hle-stream run``; with ``file_size_limit`` every file it writes is capped at that
        many bytes (a full disk, as far as its checkpoints are concerned: writes fail with EFBIG)
        until ``lift_file_size_limit``. Its log then goes through a pipe, which the cap does not bind."""
        args = [EXE, "run", "--bootstrap-servers", self.broker.bootstrap_servers, "--input-topic", self.topic,
                "--predictions-topic", self.predictions, "--dead-letter-topic", self.dead_letters,
                "--group-id", f"{self.topic}-g", "--checkpoint-dir", str(self.checkpoints),
                "--trained-ids-log", str(self.lineage), "--http-port", "0", "--no-metrics", *FAST_GROUP,
                *self.extra_args]
        log = open(self.workdir / "daemon.log", "ab")
        env = {"OMP_NUM_THREADS": "1", **os.environ}
        if file_size_limit is None:
            self.process = subprocess.Popen(args, stderr=log, env=env)
            return
        cap = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.RLIM_INFINITY))  # noqa: E731
        self.process = subprocess.Popen(args, stderr=subprocess.PIPE, env=env, preexec_fn=cap)
        threading.Thread(target=shutil.copyfileobj, args=(self.process.stderr, log), daemon=True).start()

    def lift_file_size_limit(self) -> None:
        resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def trained(self) -> int:
        return len(read_ids(self.lineage))

    def wait_trained(self, at_least: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with code {self.process.returncode}; see {self.workdir}/daemon.log")
            if (n := self.trained()) >= at_least:
                return n
            time.sleep(0.1)
        raise TimeoutError(f"the daemon trained {self.trained()} of {at_least} events in {timeout} s")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        return code, time.monotonic() - started

    def produce(self, values: list[bytes | None]) -> None:
        producer = KafkaProducer(**self.settings.client(), linger_ms=20, batch_size=262_144,
                                 max_request_size=8 << 20)  # the adversarial scenario sends a 4.5 MB record
        for value in values:
            producer.send(self.topic, value, key=b"tombstone" if value is None else None)  # a tombstone needs a key
        producer.flush()
        producer.close()

    def read(self, topic: str, expected: int, timeout: float = 60, quiet_s: float = 2.0) -> list[dict]:
        """Every value of ``topic``: at least ``expected``, then until nothing new came for ``quiet_s``
        (repeated predictions make the count open-ended; Tansu's end offsets cannot be trusted)."""
        consumer = KafkaConsumer(**self.settings.client(), auto_offset_reset="earliest", fetch_max_wait_ms=100)
        consumer.assign([TopicPartition(topic, 0)])
        values, deadline, last_new = [], time.monotonic() + timeout, time.monotonic()
        while time.monotonic() < deadline and (len(values) < expected or time.monotonic() - last_new < quiet_s):
            for records in consumer.poll(timeout_ms=300).values():
                values += [json.loads(r.value) for r in records]
                last_new = time.monotonic()
        consumer.close()
        return values

    def lineage_ids(self) -> list[str]:
        return read_ids(self.lineage)

    def last_checkpoint(self) -> dict:
        return decode(sorted(self.checkpoints.glob("checkpoint-*.pt"))[-1].read_bytes())


def _corrupt_newest_checkpoint(run: DaemonRun) -> bool:
    files = sorted(run.checkpoints.glob("checkpoint-*.pt"))
    if not files:
        return False
    blob = bytearray(files[-1].read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    files[-1].write_bytes(bytes(blob))
    return True


def kill_run(broker: LocalBroker, workdir: Path, events: int, kills: int, seed: int = 0,
             corrupt_at: int | None = None, label_delay: int = 0) -> dict:
    """SIGKILL the daemon ``kills`` times at random moments while it learns ``events`` events;
    before restart number ``corrupt_at`` the newest checkpoint is corrupted. With ``label_delay``
    each label comes as a label event that many events (± a tenth) after its features."""
    rng = random.Random(seed)
    run = DaemonRun(broker, workdir, f"kills-{seed}-{label_delay}",
                    ["--checkpoint-every-events", "300", "--checkpoint-every-seconds", "1", "--memory-size", "128"])
    stream = labelled_stream(events, seed)
    records = with_delayed_labels(stream, label_delay, label_delay // 10, seed=seed) if label_delay else stream
    run.produce([json.dumps(e).encode() for e in records])
    started = time.monotonic()
    corrupted = 0
    for kill in range(kills):
        run.start()
        # some progress past the last restart (a checkpoint landed), then a random moment
        run.wait_trained(min(run.trained() + 1, events), timeout=120)
        time.sleep(rng.uniform(0.0, 1.5))
        run.kill()
        if corrupt_at is not None and kill + 1 == corrupt_at:
            corrupted += _corrupt_newest_checkpoint(run)
    run.start()
    run.wait_trained(events, timeout=600)
    code, _ = run.terminate()
    return {
        "events": events, "kills": kills, "seconds": round(time.monotonic() - started, 1), "final_exit_code": code,
        **_accounting(run, stream),
        "model_seen": run.last_checkpoint()["learner"]["counters"]["seen"],
        "labels_not_joined": sum(d["reason"].startswith("label_") for d in run.read(run.dead_letters, 0, timeout=10)),
        "checkpoints_corrupted": corrupted,
        "checkpoints_recovered": (workdir / "daemon.log").read_text().count("recovered from"),
    }


def _accounting(run: DaemonRun, stream: list[dict]) -> dict:
    """What the stopped daemon's lineage and prediction topic say about the produced ``stream``:
    each event learned once, each predicted at least once."""
    lineage = run.lineage_ids()
    produced = [e["id"] for e in stream]
    predicted = [p["id"] for p in run.read(run.predictions, len(stream), timeout=60)]
    return {
        "lost": len(set(produced) - set(lineage)),
        "trained_twice": len(lineage) - len(set(lineage)),
        "trained_unknown": len(set(lineage) - set(produced)),
        "lineage_length": len(lineage),
        "predictions_missing": len(set(produced) - set(predicted)),
        "predictions_repeated": len(predicted) - len(set(predicted)),
    }


# -- malformed input -------------------------------------------------------------------------
def _valid(i: int) -> dict:
    return {"id": f"m{i}", "x": [0.0] * DIM}


def malformed_kinds(max_bytes: int) -> dict[str, list]:
    """Generators of malformed values by expected dead-letter reason (``class_cap`` is a
    ``bad_label`` that only a full class set provokes)."""
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return {
        "too_large": [lambda i: json.dumps({**_valid(i), "pad": "x" * max_bytes}).encode()],
        "not_json": [lambda i: b"\xff\xfe\x00 not json", lambda i: b'{"id": "m%d", "x": [1,' % i,
                     lambda i: b"", lambda i: None],  # None: a tombstone
        "not_object": [lambda i: b"[1, 2, 3]", lambda i: b'"a string"', lambda i: b"42", lambda i: b"null"],
        "missing_field": [lambda i: json.dumps({"x": [0.0] * DIM}).encode(),
                          lambda i: json.dumps({"id": f"m{i}"}).encode()],
        "wrong_type": [lambda i: json.dumps({"id": [i], "x": [0.0] * DIM}).encode(),
                       lambda i: json.dumps({**_valid(i), "x": "0.0"}).encode(),
                       lambda i: json.dumps({**_valid(i), "x": [True] * DIM}).encode(),
                       lambda i: json.dumps({**_valid(i), "label": 7}).encode(),
                       lambda i: json.dumps({**_valid(i), "ts": "yesterday"}).encode(),
                       lambda i: json.dumps({"id": f"m{i}", "x_b64": b64(bytes(DIM)), "dtype": "int64",
                                             "shape": [DIM]}).encode(),
                       lambda i: json.dumps({"id": f"m{i}", "x_b64": b64(bytes(DIM)), "dtype": "uint8",
                                             "shape": [DIM]}).encode()],  # uint8 features for a float model
        "bad_encoding": [lambda i: json.dumps({"id": f"m{i}", "x_b64": "***not base64***", "dtype": "float32",
                                               "shape": [DIM]}).encode()],
        "wrong_shape": [lambda i: json.dumps({**_valid(i), "x": [0.0] * (DIM - 1)}).encode(),
                        lambda i: json.dumps({"id": f"m{i}", "x_b64": b64(bytes(4 * DIM)), "dtype": "float32",
                                              "shape": [4, DIM // 4]}).encode(),
                        lambda i: json.dumps({"id": f"m{i}", "x_b64": b64(bytes(7)), "dtype": "float32",
                                              "shape": [DIM]}).encode()],
        "non_finite": [lambda i: json.dumps({**_valid(i), "x": [float("nan")] + [0.0] * (DIM - 1)}).encode(),
                       lambda i: json.dumps({**_valid(i), "x": [float("inf")] * DIM}).encode()],
        "bad_label": [lambda i: json.dumps({**_valid(i), "label": "n0//n0.1"}).encode(),
                      lambda i: json.dumps({**_valid(i), "label": "/".join(["d"] * 9)}).encode(),
                      lambda i: json.dumps({**_valid(i), "label": ""}).encode()],
        "class_cap": [lambda i: json.dumps({**_valid(i), "label": f"new{i}"}).encode()],
    }


def malformed_run(broker: LocalBroker, workdir: Path, valid: int, per_kind: int, seed: int = 0) -> dict:
    """``per_kind`` malformed records of each kind, shuffled among ``valid`` events; the class-cap
    ones among the events after the last new class (before it they would take a valid class's slot)."""
    rng = random.Random(seed)
    max_bytes = 64 * 1024
    run = DaemonRun(broker, workdir, f"malformed-{seed}",
                    ["--input-shape", str(DIM), "--input-dtype", "float32", "--max-classes", str(CLASSES), "--max-message-bytes", str(max_bytes),
                     "--checkpoint-every-events", "1000", "--checkpoint-every-seconds", "2", "--memory-size", "128"])
    stream = labelled_stream(valid, seed)
    seen, all_known_at = set(), 0
    for position, event in enumerate(stream):
        parts = event["label"].split("/")
        new = {"/".join(parts[: i + 1]) for i in range(len(parts))} - seen
        if new:
            seen |= new
            all_known_at = position + 1
    assert len(seen) == CLASSES, seen
    values: list[tuple[bytes, str | None]] = [(json.dumps(e).encode(), None) for e in stream]
    kinds = malformed_kinds(max_bytes)
    n = 0
    for kind, makers in kinds.items():
        for j in range(per_kind):
            low = _index_after(values, all_known_at) if kind == "class_cap" else 0
            reason = "bad_label" if kind == "class_cap" else kind
            values.insert(rng.randint(low, len(values)), (makers[j % len(makers)](n), reason))
            n += 1
    run.produce([v for v, _ in values])
    expected = {offset: reason for offset, (_, reason) in enumerate(values) if reason}
    run.start()
    labelled_ids = [e["id"] for e in stream]
    run.wait_trained(len(labelled_ids), timeout=600)
    alive_before_stop = run.process.poll() is None
    dead = run.read(run.dead_letters, len(expected), timeout=120)
    code, _ = run.terminate()
    predictions = run.read(run.predictions, valid, timeout=60)
    lineage = run.lineage_ids()
    wrong = [d for d in dead if expected.get(d["offset"]) != d["reason"]]
    return {
        "valid": valid, "malformed": len(expected),
        "malformed_by_reason": dict(collections.Counter(expected.values())),
        "dead_lettered": len(dead),
        "dead_lettered_by_reason": dict(collections.Counter(d["reason"] for d in dead)),
        "wrong_reason_or_offset": len(wrong),
        "crashes": int(not alive_before_stop) + int(code != 0),
        "valid_not_predicted": len(set(labelled_ids) - {p["id"] for p in predictions}),
        "valid_not_trained": len(set(labelled_ids) - set(lineage)),
        "trained_twice": len(lineage) - len(set(lineage)),
        "dead_letter_bytes_kept": all(base64.b64decode(d["value_b64"]) == (values[d["offset"]][0] or b"") for d in dead),
    }


def _index_after(values: list[tuple[bytes, str | None]], valid_count: int) -> int:
    """The position in ``values`` just after the ``valid_count``-th valid event."""
    seen = 0
    for index, (_, reason) in enumerate(values):
        if reason is None:
            seen += 1
            if seen == valid_count:
                return index + 1
    return len(values)


# -- an attacker's records, requests and disk ---------------------------------------------------
def adversarial_records(seed: int) -> list[tuple[str, bytes | None, str]]:
    """(category, value, expected dead-letter reason) for every attack the hardening covers."""
    rng = random.Random(seed)
    x = [0.5] * DIM
    doc = lambda i, **fields: json.dumps({"id": f"adv{i}", "x": x, **fields}).encode()  # noqa: E731
    surrogate = b'{"id": "adv-s", "x": [' + b",".join([b"0.5"] * DIM) + b'], "label": "n0/\\ud800"}'
    return [
        # single records that used to raise out of the parser (a crash loop on restart)
        ("crash_loop", b"[" * 100_000 + b"]" * 100_000, "not_json"),
        ("crash_loop", b'{"id": "adv-big", "x": [' + b"9" * 400 + b"," + b",".join([b"0"] * (DIM - 1)) + b"]}",
         "out_of_range"),
        ("crash_loop", json.dumps({"id": "adv-dt", "x_b64": "AAAA", "dtype": [1], "shape": [3]}).encode(), "wrong_type"),
        ("crash_loop", b'{"id": "adv-ts", "ts": 1' + b"0" * 400 + b', "x": [' + b",".join([b"0"] * DIM) + b"]}",
         "wrong_type"),
        ("crash_loop", json.dumps({"id": "adv1", "x_b64": "", "dtype": "float32", "shape": []}).encode(), "wrong_shape"),
        # output that used to exceed Kafka's limit and stall delivery for good
        ("large_output", doc(2, x="0" * 800_000), "wrong_type"),
        ("large_output", json.dumps({"id": "adv3", "x": x, "pad": "p" * (4 << 20)}).encode(), "too_large"),
        ("large_output", json.dumps({"id": "i" * 1_000_000, "x": x}).encode(), "bad_id"),
        # finite features huge enough to turn every weight to NaN
        *[("poison", doc(10 + i, x=[rng.choice([1e30, -1e38, 3e7])] * DIM, label="n0"), "out_of_range")
          for i in range(5)],
        # labels that used to pass: surrogates, control and bidi characters, kilobytes long
        ("label", surrogate, "bad_label"),
        ("label", doc(20, label="n0/\u202eevil"), "bad_label"),
        ("label", doc(21, label="n0/bell\x07"), "bad_label"),
        ("label", doc(22, label="n0/" + "l" * 2000), "bad_label"),
    ]


def adversarial_run(broker: LocalBroker, workdir: Path, valid: int, seed: int = 0) -> dict:
    """Every attack of ``adversarial_records`` (and an empty-featured first record, duplicate ids)
    among ``valid`` events, fed to a daemon that starts on a full disk and under HTTP abuse; then
    the disk is freed. Counts what was dead-lettered, crashes, stalls, valid events lost and
    non-finite weights in the final checkpoint."""
    rng = random.Random(seed)
    port = free_port()
    run = DaemonRun(broker, workdir, f"adversarial-{seed}",
                    ["--checkpoint-every-events", "200", "--checkpoint-every-seconds", "1", "--memory-size", "128",
                     "--http-port", str(port), "--http-timeout-seconds", "2"])
    stream = labelled_stream(valid, seed)
    attacks = adversarial_records(seed)
    values: list[tuple[str, bytes | None, str | None]] = [("valid", json.dumps(e).encode(), None) for e in stream]
    for attack in attacks:
        values.insert(rng.randint(len(values) // 4, len(values)), attack)
    for event in rng.sample(stream, 10):  # a producer's retries: the same id again, later
        values.insert(rng.randint(values.index(("valid", json.dumps(event).encode(), None)) + 1, len(values)),
                      ("duplicate", json.dumps(event).encode(), "duplicate_id"))
    values.insert(0, ("first_record", json.dumps({"id": "adv-empty", "x": []}).encode(), "wrong_shape"))
    run.produce([v for _, v, _ in values])
    expected = {offset: (category, reason) for offset, (category, _, reason) in enumerate(values) if reason}
    run.start(file_size_limit=16_384)  # checkpoints do not fit: every write fails with EFBIG
    deadline = time.monotonic() + 300
    while _probe(port, "/readyz").get("checkpoint") is not False:
        if run.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon never reported a failed checkpoint; see {workdir}/daemon.log")
        time.sleep(0.2)
    http = http_abuse(port)
    second = subprocess.run([EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", run.topic,
                             "--checkpoint-dir", str(run.checkpoints), "--http-port", "0"],
                            capture_output=True, text=True, timeout=120)
    alive_on_full_disk = run.process.poll() is None
    run.lift_file_size_limit()
    stalls = 0
    try:
        run.wait_trained(valid, timeout=600)
    except TimeoutError:
        stalls += 1
    ready_after_disk_freed = _wait_ready(port, 60)
    dead = run.read(run.dead_letters, len(expected), timeout=120)
    code, _ = run.terminate()
    checkpoint = run.last_checkpoint()
    lineage = run.lineage_ids()
    got = {d["offset"]: d["reason"] for d in dead}
    return {
        "records_tried": len(values), "valid": valid,
        "attacks_by_category": dict(collections.Counter(category for category, _ in expected.values())),
        "dead_lettered_by_reason": dict(collections.Counter(d["reason"] for d in dead)),
        "wrong_reason_or_offset": sum(got.get(offset) != reason for offset, (_, reason) in expected.items()),
        "largest_dead_letter_bytes": max(len(json.dumps(d)) for d in dead),
        "dead_letters_truncated": sum(d["value_truncated"] for d in dead),
        "crashes": int(not alive_on_full_disk) + int(code != 0),
        "stalls": stalls,
        "valid_lost": len({e["id"] for e in stream} - set(lineage)),
        "trained_twice": len(lineage) - len(set(lineage)),
        "non_finite_parameters": sum(int((~torch.isfinite(t)).sum()) for t in checkpoint["learner"]["net"].values()
                                     if t.is_floating_point()),
        "checkpoint_failures_logged": (workdir / "daemon.log").read_text().count("checkpoint write failed"),
        "ready_after_disk_freed": ready_after_disk_freed,
        "second_daemon_exit_code": second.returncode,
        "second_daemon_refused_with_message": "in use by another hle-stream" in second.stderr,
        **http,
    }


def _probe(port: int, path: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())
    except (OSError, ValueError):
        return {}


def _wait_ready(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _probe(port, "/readyz").get("ready"):
            return True
        time.sleep(0.2)
    return False


def http_abuse(port: int, idle_connections: int = 300) -> dict:
    """A 50 MB body, a body that never finishes, a request head that never finishes and hundreds
    of idle connections against the daemon's HTTP server: what each got, and /healthz meanwhile."""
    started = time.monotonic()
    huge = socket.create_connection(("127.0.0.1", port), timeout=30)  # announces 50 MB, answered before sending it
    huge.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n[" % (50 << 20))
    huge_answer = huge.recv(200).split(b"\r\n")[0].decode(errors="replace")
    huge_s = time.monotonic() - started
    huge.close()
    slow_body = socket.create_connection(("127.0.0.1", port))
    slow_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[")
    slow_head = socket.create_connection(("127.0.0.1", port))
    slow_head.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    slow_head_opened = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle_connections)]
    health = [_timed_probe(port) for _ in range(20)]
    slow_body.settimeout(30)
    slow_body_answer = slow_body.recv(200).split(b"\r\n")[0].decode(errors="replace")
    slow_head.settimeout(30)
    slow_head_closed = slow_head.recv(200) == b""
    slow_head_closed_after_s = time.monotonic() - slow_head_opened
    for sock in (slow_body, slow_head, *idle):
        sock.close()
    return {"http_50mb_body_answer": huge_answer, "http_50mb_body_seconds": round(huge_s, 2),
            "http_slow_body_answer": slow_body_answer, "http_slow_head_closed": slow_head_closed,
            "http_slow_head_closed_after_s": round(slow_head_closed_after_s, 2),
            "http_idle_connections": idle_connections, "healthz_ok_under_abuse": sum(ok for ok, _ in health),
            "healthz_probes": len(health), "healthz_max_ms": round(max(ms for _, ms in health), 1)}


def _timed_probe(port: int) -> tuple[bool, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            ok = answer.status == 200
    except OSError:
        ok = False
    return ok, 1000 * (time.perf_counter() - started)


def sigterm_run(broker: LocalBroker, workdir: Path, events: int) -> dict:
    """SIGTERM while the daemon learns at full speed: exit time, code, and a checkpoint that covers
    exactly what was learned (a restart then finishes the stream with nothing lost or repeated)."""
    run = DaemonRun(broker, workdir, "sigterm", ["--checkpoint-every-events", "100000",
                                                 "--checkpoint-every-seconds", "3600"])
    stream = labelled_stream(events)
    run.produce([json.dumps(e).encode() for e in stream])
    run.start()
    while run.process.poll() is None and not (workdir / "daemon.log").read_text().count("learner created"):
        time.sleep(0.1)
    time.sleep(2.0)  # in full flow
    code, seconds = run.terminate()
    checkpoint = run.last_checkpoint()
    stopped_at = len(run.lineage_ids())
    run.extra_args = ["--checkpoint-every-seconds", "1"]  # the rest of the stream, recorded as it goes
    run.start()
    run.wait_trained(events, timeout=600)
    run.terminate()
    lineage = run.lineage_ids()
    return {"events": events, "exit_code": code, "seconds_to_exit": round(seconds, 2),
            "learned_before_sigterm": stopped_at, "checkpoint_offset": checkpoint["offsets"].get(0),
            "checkpoint_seen": checkpoint["learner"]["counters"]["seen"],
            "lost": len({e["id"] for e in stream} - set(lineage)), "trained_twice": len(lineage) - len(set(lineage))}


class S3Emulator:
    """``moto_server`` on a loopback port with the bucket Tansu's ``s3://tansu/`` engine writes to."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        self.process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=open(workdir / "moto.log", "wb"))
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{self.port}/tansu", method="PUT")
                urllib.request.urlopen(request, timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start; see {workdir}/moto.log") from None
                time.sleep(0.2)

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT": f"http://127.0.0.1:{self.port}", "AWS_ALLOW_HTTP": "true",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}"}  # Tansu reads AWS_ENDPOINT, boto3 this one

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
    except OSError:
        return False


def outage_run(broker, workdir: Path, events: int, outage_s: float) -> dict:
    """Half the stream learned, the durable ``broker`` (``tests.support.brokers.running_broker``)
    killed for ``outage_s`` seconds and restarted on the same port and storage, then the other
    half produced and learned."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    run = DaemonRun(broker, workdir, "outage", ["--checkpoint-every-seconds", "1", "--http-port", str(port)])
    stream = labelled_stream(events)
    half = events // 2
    run.produce([json.dumps(e).encode() for e in stream[:half]])
    run.start()
    run.wait_trained(half // 2, timeout=300)
    broker.kill()
    went_away = time.monotonic()
    readiness = []  # (seconds since the broker went away, /readyz said ready)
    while time.monotonic() - went_away < outage_s:
        readiness.append((time.monotonic() - went_away, _ready(port)))
        time.sleep(0.25)
    unready = [t for t, ok in readiness if not ok]
    broker.start()
    back = time.monotonic()
    while not _ready(port) and time.monotonic() - back < 120:
        time.sleep(0.1)
    ready_again_s = time.monotonic() - back
    run.produce([json.dumps(e).encode() for e in stream[half:]])
    run.wait_trained(events, timeout=300)
    learning_again_s = time.monotonic() - back
    code, _ = run.terminate()
    return {
        "events": events, "outage_s": outage_s, "exit_code": code,
        "unready_after_s": round(unready[0], 2) if unready else None,
        "ready_probes_after_unready": sum(ok for t, ok in readiness if unready and t > unready[0]),
        "probes_during_outage": len(readiness),
        "ready_again_after_s": round(ready_again_s, 2),
        "all_learned_after_s": round(learning_again_s, 2),
        **_accounting(run, stream),
        "producers_replaced": (workdir / "daemon.log").read_text().count("new producer and retry"),
    }


def checkpoint_figures(workdir: Path, memory_size: int) -> dict:
    """Size and write/read time of a daemon checkpoint whose replay memory is full: the default
    learner (PL-FMS, small CNN) on the Fashion-MNIST stream, fed until the memory is full."""
    import torch

    from hle_stream.contract import parse_event
    from hle_stream.core.config import LearnerConfig
    from hle_stream.core.learner import HierarchicalLearner
    from hle_stream.core.methods import method_config
    from hle_stream.eval.datasets import load_dataset
    from hle_stream.service.checkpoint import CheckpointStore

    events = [parse_event(json.dumps(e).encode()) for e in
              simulated_events(load_dataset("fashion-mnist"), "multi-depth", 0, memory_size + 200)]
    learner = HierarchicalLearner(method_config("pl-fms", LearnerConfig(memory_size=memory_size, device="cpu")),
                                  events[0].x.shape, torch.uint8)
    for start in range(0, len(events), 64):
        chunk = events[start:start + 64]
        learner.observe(torch.from_numpy(np.stack([e.x for e in chunk])), [e.label for e in chunk])
    assert learner.stats().memory_size == memory_size
    store = CheckpointStore(workdir / f"figures-{memory_size}")
    started = time.perf_counter()
    path = store.save({"learner": learner.state_dict(), "offsets": {0: len(events)}})
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    store.load_latest()
    return {"memory_samples": memory_size, "checkpoint_bytes": path.stat().st_size, "write_s": round(write_s, 3),
            "read_s": round(time.perf_counter() - started, 3)}
