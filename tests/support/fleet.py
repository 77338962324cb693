"""The scale-out topology on one machine, for tests and benchmarks: on a running broker (either
kind, ``tests.support.brokers``), a model store in a loopback S3, trainer candidates and predictor
replicas, each the ``hle-stream`` command a user runs, and the checks that matter (every event
predicted, the lineage exactly once, the takeover time, fencing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.blob_store import S3BlobStore, open_blob_store
from connectors.broker import free_port
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.service.checkpoint import decode
from hle_stream.service.lineage import read_ids
from tests.support.fault_injection import EXE, FAST_GROUP, S3Emulator, labelled_stream

TOOK_OVER = re.compile(r"^(\S+ \S+) INFO .*took over as the active trainer \(generation (\d+)\) in ([\d.]+) s")
MODEL_BUCKET = "models"


@dataclass
class Member:
    name: str
    process: subprocess.Popen
    log: Path
    http_port: int | None = None

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def takeovers(self) -> list[tuple[float, int]]:
        """(unix time, generation) of each takeover this trainer logged."""
        found = []
        for line in self.lines():
            if match := TOOK_OVER.match(line):
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.append((stamp, int(match.group(2))))
        return found


@dataclass
class Fleet:
    """``with Fleet(workdir, broker.bootstrap_servers) as fleet:`` topics made and S3 up; then start
    trainers and replicas."""

    workdir: Path
    bootstrap_servers: str
    partitions: int = 4
    topic: str = "fleet"
    trainer_args: list[str] = field(default_factory=list)
    store: str = "s3"  # the model store: "s3" (moto) or "directory" (a folder every member shares)
    members: list[Member] = field(default_factory=list)

    predictions = property(lambda self: f"{self.topic}-pred")
    dead_letters = property(lambda self: f"{self.topic}-dlq")
    lineage = property(lambda self: self.workdir / "trained-ids.log")
    store_url = property(lambda self: f"s3://{MODEL_BUCKET}/{self.topic}" if self.store == "s3"
                         else str(self.workdir / "model-store"))

    def __enter__(self) -> "Fleet":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.s3 = S3Emulator(self.workdir)
        self.s3.create_bucket(MODEL_BUCKET)
        self.settings = KafkaSettings(self.bootstrap_servers)
        ensure_topics(self.settings, {self.topic: self.partitions, self.predictions: 1, self.dead_letters: 1})
        return self

    def __exit__(self, *exc: object) -> None:
        for member in self.members:
            if member.process.poll() is None:
                member.process.send_signal(signal.SIGCONT)
                member.process.kill()
                member.process.wait()
        self.s3.stop()

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.s3.env, "OMP_NUM_THREADS": "1"}

    def start_trainer(self, name: str) -> Member:
        log = self.workdir / f"{name}.log"
        args = [EXE, "run", "--role", "trainer", "--model-store", self.store_url,
                "--bootstrap-servers", self.bootstrap_servers, "--input-topic", self.topic,
                "--predictions-topic", self.predictions, "--dead-letter-topic", self.dead_letters,
                "--group-id", f"{self.topic}-trainers", "--trained-ids-log", str(self.lineage), "--no-predictions",
                "--http-port", "0", "--no-metrics", *FAST_GROUP, *self.trainer_args]
        member = Member(name, subprocess.Popen(args, stderr=open(log, "ab"), env=self._env()), log)
        self.members.append(member)
        return member

    def start_replica(self, name: str, http: bool = True) -> Member:
        log = self.workdir / f"{name}.log"
        port = free_port() if http else None
        args = [EXE, "serve", "--model-store", self.store_url, "--bootstrap-servers", self.bootstrap_servers,
                "--input-topic", self.topic, "--predictions-topic", self.predictions,
                "--group-id", f"{self.topic}-replicas", "--http-port", str(port or 0), "--refresh-seconds", "0.5",
                *FAST_GROUP]
        member = Member(name, subprocess.Popen(args, stderr=open(log, "ab"), env=self._env()), log, port)
        self.members.append(member)
        return member

    def produce(self, events: list[dict]) -> None:
        producer = KafkaProducer(**self.settings.client(), linger_ms=20, batch_size=262_144)
        for event in events:  # keyed by id: spread over the partitions
            producer.send(self.topic, json.dumps(event).encode(), key=str(event["id"]).encode())
        producer.flush()
        producer.close()

    def trained(self) -> list[str]:
        return read_ids(self.lineage)

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for member in self.members:
                if member.process.poll() not in (None, -signal.SIGKILL, 0):
                    raise RuntimeError(f"{member.name} exited with {member.process.returncode}; see {member.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} within {timeout} s; logs in {self.workdir}")
            time.sleep(0.2)

    def predictions_served(self, timeout_s: float = 2.0) -> list[dict]:
        """Every prediction document in the predictions topic, in order."""
        consumer = KafkaConsumer(**self.settings.client(), auto_offset_reset="earliest", fetch_max_wait_ms=100)
        consumer.assign([TopicPartition(self.predictions, 0)])
        documents, quiet_since = [], time.monotonic()
        while time.monotonic() - quiet_since < timeout_s:
            for records in consumer.poll(timeout_ms=300).values():
                documents += [json.loads(r.value) for r in records]
                quiet_since = time.monotonic()
        consumer.close()
        return documents

    def predicted_ids(self, timeout_s: float = 2.0) -> list[str]:
        return [document["id"] for document in self.predictions_served(timeout_s)]

    def store_checkpoints(self) -> dict[int, dict]:
        """Every checkpoint in the model store by number, decoded."""
        os.environ.update(self.s3.env)
        store = S3BlobStore(MODEL_BUCKET, self.topic) if self.store == "s3" else open_blob_store(self.store_url)
        found = {}
        for key in store.keys("checkpoint-"):
            blob = store.get(key) if key.endswith(".pt") else None
            if blob is not None:  # rotated out since the listing
                found[int(key.removeprefix("checkpoint-").removesuffix(".pt"))] = decode(blob)
        return found

    def metrics(self, member: Member) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{member.http_port}/metrics", timeout=10).read().decode()


def failover_run(bootstrap_servers: str, workdir: Path, events: int = 2400, seed: int = 0, store: str = "s3") -> dict:
    """An active trainer, a standby, two replicas and a producer on a 4-partition topic; the active
    trainer is SIGKILLed once a third of the stream is learned. Returns the accounting."""
    stream = labelled_stream(events, seed)
    produced = {e["id"] for e in stream}
    # snapshots every second, checkpoints every 300 events: the successor restores a model older
    # than the newest snapshot its predecessor published
    trainer_args = ["--checkpoint-every-events", "300", "--snapshot-every-seconds", "1"]
    with Fleet(workdir, bootstrap_servers, trainer_args=trainer_args, store=store) as fleet:
        first = fleet.start_trainer("trainer-a")
        fleet.wait(lambda: first.takeovers(), 60, "trainer-a did not become active")
        second = fleet.start_trainer("trainer-b")
        replicas = [fleet.start_replica(f"replica-{i}") for i in (1, 2)]
        fleet.produce(stream)
        fleet.wait(lambda: len(fleet.trained()) >= events // 3, 300, "a third of the stream was not learned")
        killed_at = time.time()
        first.process.kill()
        first.process.wait()
        fleet.wait(lambda: second.takeovers(), 120, "trainer-b did not take over")
        took_over_at, generation = second.takeovers()[-1]
        fleet.wait(lambda: set(fleet.trained()) >= produced, 600, "the standby did not learn the rest")
        second.process.send_signal(signal.SIGTERM)
        trainer_exit = second.process.wait(60)
        fleet.wait(lambda: set(fleet.predicted_ids(0.5)) >= produced, 300, "not every event was predicted")
        lineage, documents = fleet.trained(), fleet.predictions_served()
        predicted = [document["id"] for document in documents]
        replica_exits = []
        for replica in replicas:
            replica.process.send_signal(signal.SIGTERM)
            replica_exits.append(replica.process.wait(60))
        served = [_served_versions(replica.lines()) for replica in replicas]
        return {"events": events, "trained": len(lineage), "trained_twice": len(lineage) - len(set(lineage)),
                "lost": len(produced - set(lineage)), "not_predicted": len(produced - set(predicted)),
                "predictions": len(predicted), "takeover_s": round(took_over_at - killed_at, 2),
                "takeover_generation": generation, "trainer_exit": trainer_exit, "replica_exits": replica_exits,
                "snapshots_swapped": [len(versions) for versions in served],
                "served_version_regressions": sum(b < a for versions in served for a, b in zip(versions, versions[1:])),
                "snapshots_refused": sum("refused snapshot version" in line for r in replicas for line in r.lines()),
                "non_nested_paths": sum(not _nested(document["path"]) for document in documents)}


def fencing_run(bootstrap_servers: str, workdir: Path, events: int = 3000, seed: int = 0) -> dict:
    """The active trainer is SIGSTOPped past the session timeout, the standby takes over, then the
    paused one is resumed: it must write no checkpoint and commit nothing afterwards, and what a
    replica serves must never go back."""
    stream = labelled_stream(events, seed)
    produced = {e["id"] for e in stream}
    with Fleet(workdir, bootstrap_servers, trainer_args=["--checkpoint-every-events", "100",
                                                         "--checkpoint-every-seconds", "1",
                                                         "--snapshot-every-seconds", "1"]) as fleet:
        first = fleet.start_trainer("trainer-a")
        fleet.wait(lambda: first.takeovers(), 60, "trainer-a did not become active")
        second = fleet.start_trainer("trainer-b")
        replica = fleet.start_replica("replica")
        fleet.produce(stream)
        fleet.wait(lambda: len(fleet.trained()) >= events // 4, 300, "a quarter of the stream was not learned")
        first.process.send_signal(signal.SIGSTOP)
        fleet.wait(lambda: second.takeovers(), 120, "trainer-b did not take over")
        time.sleep(2)  # the new trainer is well under way
        newest_before = max(fleet.store_checkpoints())
        resumed_at = time.time()
        first.process.send_signal(signal.SIGCONT)
        fleet.wait(lambda: set(fleet.trained()) >= produced, 600, "the new trainer did not learn the rest")
        time.sleep(3)  # the resumed trainer's loop has run several checkpoint periods meanwhile
        writes_after = [n for n, c in fleet.store_checkpoints().items()
                        if n > newest_before and c["writer"]["pid"] == first.process.pid]
        a_lines = first.lines()
        # a commit logs its checkpoint's number; one A made after its resume names a number above
        # every checkpoint that existed then (a line logged just after SIGCONT may be older)
        commits_after = [n for n in map(_committed_checkpoint, a_lines) if n is not None and n > newest_before]
        fenced_lines = [line for line in a_lines[_first_line_after(a_lines, resumed_at):] if "fenced" in line]
        fleet.wait(lambda: set(fleet.predicted_ids(0.5)) >= produced, 300, "not every event was predicted")
        exits = []
        for member in (first, second, replica):
            member.process.send_signal(signal.SIGTERM)
            exits.append(member.process.wait(60))
        lineage, documents, served = fleet.trained(), fleet.predictions_served(), _served_versions(replica.lines())
        return {"events": events, "exits": exits, "a_checkpoints_in_store_after_resume": len(writes_after),
                "a_commits_after_resume": len(commits_after), "a_fenced_log_lines": len(fenced_lines),
                "trained_twice": len(lineage) - len(set(lineage)), "lost": len(produced - set(lineage)),
                "served_version_regressions": sum(b < a for a, b in zip(served, served[1:])),
                "non_nested_paths": sum(not _nested(document["path"]) for document in documents)}


def rollback_run(bootstrap_servers: str, workdir: Path, events: int = 1600, seed: int = 0) -> dict:
    """A trainer and a replica; once half the stream is learned, ``hle-stream model rollback`` to
    the oldest checkpoint in the store (S3), then the other half. Returns how long the replica took
    to serve the rolled-back model and the lineage's accounting."""
    stream = labelled_stream(events, seed)
    produced = {e["id"] for e in stream}
    trainer_args = ["--checkpoint-every-events", "200", "--snapshot-every-seconds", "1"]
    with Fleet(workdir, bootstrap_servers, trainer_args=trainer_args) as fleet:
        trainer = fleet.start_trainer("trainer")
        fleet.wait(lambda: trainer.takeovers(), 60, "the trainer did not become active")
        replica = fleet.start_replica("replica")
        fleet.produce(stream[: events // 2])
        fleet.wait(lambda: len(fleet.trained()) >= events // 2 and len(fleet.store_checkpoints()) >= 3, 300,
                   "half the stream was not learned into three checkpoints")
        oldest = min(fleet.store_checkpoints())
        listed = subprocess.run([EXE, "model", "list", "--model-store", fleet.store_url, "--json"],
                                capture_output=True, text=True, env=fleet._env(), timeout=120)
        versions = [json.loads(line) for line in listed.stdout.splitlines()]
        to = next(v["version"] for v in versions if v["checkpoint"] == f"checkpoint-{oldest:09d}.pt")
        rolled_at = time.monotonic()
        done = subprocess.run([EXE, "model", "rollback", "--to", str(to), "--model-store", fleet.store_url],
                              capture_output=True, text=True, env=fleet._env(), timeout=120)
        assert done.returncode == 0, done.stderr
        new_version = int(re.search(r"now version (\d+)", done.stderr).group(1))
        fleet.wait(lambda: new_version in _served_versions(replica.lines()), 60, "the replica did not serve it")
        served_after_s = time.monotonic() - rolled_at
        fleet.wait(lambda: any("the model store was rolled back" in line for line in trainer.lines()), 60,
                   "the trainer did not adopt the rollback")
        fleet.produce(stream[events // 2:])
        fleet.wait(lambda: set(fleet.trained()) >= produced, 300, "the rest was not learned")
        trainer.process.send_signal(signal.SIGTERM)
        replica.process.send_signal(signal.SIGTERM)
        exits = [trainer.process.wait(60), replica.process.wait(60)]
        lineage, served = fleet.trained(), _served_versions(replica.lines())
        return {"events": events, "rolled_back_to": to, "new_version": new_version,
                "replica_served_it_after_s": round(served_after_s, 2), "exits": exits,
                "trained_twice": len(lineage) - len(set(lineage)), "lost": len(produced - set(lineage)),
                "served_version_regressions": sum(b < a for a, b in zip(served, served[1:]))}


def _served_versions(lines: list[str]) -> list[int]:
    """The versions a replica swapped in, in order (its "serving snapshot version N" lines)."""
    return [int(match.group(1)) for line in lines if (match := re.search(r"serving snapshot version (\d+)", line))]


def _nested(path: list[dict]) -> bool:
    """Whether a served path is a path of the tree: each level's class under the one above."""
    labels = [step["label"] for step in path]
    return all(child.rpartition("/")[0] == parent for parent, child in zip(labels, labels[1:]))


def _committed_checkpoint(line: str) -> int | None:
    match = re.search(r"checkpoint checkpoint-(\d+)\.pt \(.*; committed \{", line)
    return int(match.group(1)) if match else None


def _first_line_after(lines: list[str], unix_time: float) -> int:
    for index, line in enumerate(lines):
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if stamp >= unix_time:
            return index
    return len(lines)


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def _predict_latencies(port: int, body: bytes, until) -> list[float]:
    """Sequential ``POST /predict`` of one event, until ``until()``; each round trip in seconds."""
    latencies = []
    while not until():
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                         headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            urllib.request.urlopen(request, timeout=30).read()
        except OSError:
            time.sleep(0.05)
            continue
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    return latencies


def throughput_run(bootstrap_servers: str, workdir: Path, events: int, replicas: int, seed: int = 0) -> dict:
    """One trainer and ``replicas`` predictor replicas on a 4-partition topic holding ``events``
    labelled events, all produced before the replicas start: the replicas' predicted events/s
    together (from their first prediction to the last, so their group join is not counted),
    snapshot staleness sampled from their /metrics while the trainer trains, and ``/predict``
    latency on the first replica while the trainer trains and once it is idle."""
    stream = labelled_stream(events, seed)
    # checkpoints every 2 s: the lineage file, which tells when training is done, trails by at most that
    trainer_args = ["--snapshot-every-seconds", "1", "--checkpoint-every-seconds", "2"]
    with Fleet(workdir, bootstrap_servers, topic=f"bench{replicas}", trainer_args=trainer_args) as fleet:
        trainer = fleet.start_trainer("trainer")
        fleet.wait(lambda: trainer.takeovers(), 60, "the trainer did not become active")
        fleet.produce(stream)
        produced_at = time.monotonic()
        fleet.wait(lambda: fleet.trained(), 120, "the trainer learned nothing")  # so a first snapshot exists
        members = [fleet.start_replica(f"replica-{i}") for i in range(1, replicas + 1)]
        body = json.dumps({k: v for k, v in stream[0].items() if k not in ("label", "ts")}).encode()
        ages, staleness, first, predicted_at, trained_at = [], [], None, None, None

        def training_done() -> bool:
            nonlocal trained_at
            if trained_at is None and len(fleet.trained()) >= events:
                trained_at = time.monotonic()
            return trained_at is not None

        def sample() -> bool:
            nonlocal first, predicted_at
            texts = [fleet.metrics(m) for m in members]
            total = sum(_metric(t, 'hle_events_predicted_total{source="stream"}') or 0 for t in texts)
            if not training_done():
                ages.extend(_metric(t, "hle_snapshot_age_seconds") or 0 for t in texts)
                staleness.extend(_metric(t, "hle_snapshot_staleness_versions") or 0 for t in texts)
            if first is None and total > 0:
                first = (time.monotonic(), total)
            if predicted_at is None and total >= events:
                predicted_at = time.monotonic()
            return predicted_at is not None and training_done()

        fleet.wait(lambda: all(_ready(m) for m in members), 120, "the replicas did not get ready")
        latencies_training: list[float] = []
        prober = threading.Thread(target=lambda: latencies_training.extend(
            _predict_latencies(members[0].http_port, body, training_done)), daemon=True)
        prober.start()
        while not sample():
            time.sleep(0.1)
        prober.join(60)
        latencies_idle = _predict_latencies(members[0].http_port, body, _after(len(latencies_training) or 50))
        return {"replicas": replicas, "events": events,
                "predicted_per_s": round((events - first[1]) / max(1e-9, predicted_at - first[0]), 1),
                "trained_per_s": round(events / (trained_at - produced_at), 1),
                "snapshot_age_s": _percentiles(ages), "snapshot_staleness_versions": _percentiles(staleness),
                "predict_ms_while_training": _percentiles([x * 1000 for x in latencies_training]),
                "predict_ms_idle": _percentiles([x * 1000 for x in latencies_idle])}


def _ready(member: Member) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{member.http_port}/readyz", timeout=5).status == 200
    except OSError:
        return False


def _after(count: int):
    calls = iter(range(count + 1))
    return lambda: next(calls) >= count


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"n": len(values), "p50": pick(0.5), "p99": pick(0.99)}
