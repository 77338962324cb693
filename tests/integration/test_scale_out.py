"""The parts of scale-out, each alone: the one-active-member assignor, both model stores' conditional
writes (a directory, and S3 through a loopback moto_server), the trainer lease that fences a
stale trainer, serving snapshots, and a predictor replica's batch."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from connectors.assignors import OneActiveMemberAssignor
from connectors.blob_store import DirectoryBlobStore, S3BlobStore
from connectors.memory import ListSink, MemorySource, RawRecord
from hle_stream.core.config import LearnerConfig
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import DEFAULT_METHOD, resolve_name
from hle_stream.core.predictor import Predictor
from hle_stream.service.checkpoint import CheckpointStore
from hle_stream.service.checkpointer import Checkpointer
from hle_stream.service.config import ProcessingConfig, ReplicaConfig
from hle_stream.service.processing import MicroBatchProcessor
from hle_stream.service.replica import PredictorReplica
from hle_stream.service.snapshots import newest_snapshot_marker, publish_snapshot, read_snapshot
from hle_stream.service.trainer_lease import TrainerLease
from tests.support.fault_injection import S3Emulator

DIM = 6


# -- the assignor -------------------------------------------------------------------------------
def _member(member_id: str, claim: bytes = b"") -> SimpleNamespace:
    return SimpleNamespace(member_id=member_id, group_instance_id=None,
                           metadata=SimpleNamespace(topics=["events"], user_data=claim))


CLUSTER = SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2, 3})


def _held(assignment) -> dict[str, list[int]]:
    return {member: [p for _, parts in a.assigned_partitions for p in parts] for member, a in assignment.items()}


def test_every_partition_goes_to_one_member_and_the_newest_claim_keeps_them():
    assignor = OneActiveMemberAssignor()
    assert _held(assignor.assign(CLUSTER, [_member("b"), _member("a")])) == {"a": [0, 1, 2, 3], "b": []}
    # "b" held them in generation 7, "a" (paused, back with an older claim) in generation 5: "b" keeps them
    assert _held(assignor.assign(CLUSTER, [_member("a", b"5"), _member("b", b"7"), _member("c")])) == {
        "a": [], "b": [0, 1, 2, 3], "c": []}


def test_a_member_claims_the_generation_in_which_it_held_the_partitions():
    assignor = OneActiveMemberAssignor()
    assert assignor.metadata({"events"}).user_data == b""
    assignor.on_assignment(SimpleNamespace(partitions=lambda: [("events", 0)]), 9)
    assert assignor.held_generation == 9 and assignor.metadata({"events"}).user_data == b"9"
    assignor.on_assignment(SimpleNamespace(partitions=lambda: []), 10)  # a standby now
    assert assignor.held_generation is None


# -- the model stores ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    emulator = S3Emulator(tmp_path_factory.mktemp("s3"))
    emulator.create_bucket("models")
    saved = {key: os.environ.get(key) for key in emulator.env}
    os.environ.update(emulator.env)
    yield emulator
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    emulator.stop()


@pytest.fixture(params=["directory", "s3"])
def blobs(request, tmp_path, s3):  # s3 asked for statically: started before the test's process count
    if request.param == "directory":
        return DirectoryBlobStore(tmp_path / "store")
    return S3BlobStore("models", f"test-{tmp_path.name}")


def test_a_store_creates_once_and_swaps_only_what_it_read(blobs):
    assert blobs.get("k") is None and blobs.put_new("k", b"one")
    assert not blobs.put_new("k", b"two") and blobs.get("k") == b"one"  # create-only
    assert not blobs.swap("k", b"stale", b"three") and blobs.get("k") == b"one"
    assert blobs.swap("k", b"one", b"three") and blobs.get("k") == b"three"
    assert blobs.swap("new", None, b"x") and not blobs.swap("other", b"something", b"y")
    blobs.rename("k", "k2")
    assert blobs.keys("k") == ["k2"] and blobs.get("k") is None
    blobs.delete("k2")
    assert blobs.keys("k") == []


def test_checkpoints_in_a_shared_store_are_never_overwritten(blobs):
    first, second = CheckpointStore(blobs, exclusive=False), CheckpointStore(blobs, exclusive=False)
    assert first.save({"n": 1}).name == "checkpoint-000000001.pt"
    assert second.save({"n": 2}).name == "checkpoint-000000002.pt"  # each sees the other's numbers
    assert first.load_latest()[0] == {"n": 2}


# -- the lease, and a checkpointer that obeys it ----------------------------------------------
def test_a_newer_generation_fences_the_older_trainer(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    old, new = TrainerLease(store, "g"), TrainerLease(store, "g")
    assert old.claim(3) and old.holds(3)
    assert new.claim(4) and new.holds(4)
    assert not old.holds(3)  # the paused trainer comes back: the store names generation 4
    assert not old.claim(3) and old.generation is None  # and it cannot claim its way back in
    assert TrainerLease(store, "another-group").claim(1)  # a new group starts its own count


def _records(start: int, count: int) -> list[RawRecord]:
    return [RawRecord("events", 0, i, json.dumps({"id": f"e{i}", "x": [float((i + k) % 4) for k in range(DIM)],
                                                  "label": ["a", "b/x"][i % 2]}).encode())
            for i in range(start, start + count)]


def test_a_fenced_checkpointer_writes_no_checkpoint_and_commits_nothing(tmp_path):
    blobs = DirectoryBlobStore(tmp_path)
    config = ProcessingConfig(learner_config=LearnerConfig(memory_size=16, batch_size=4, device="cpu"))
    processor, sink = MicroBatchProcessor(config), ListSink()
    source = MemorySource("events", [[]])
    lease = TrainerLease(blobs, "g")
    checkpointer = Checkpointer(CheckpointStore(blobs, exclusive=False), processor, "events", lease=lease)
    assert lease.claim(source.generation())
    processor.process(_records(0, 8), sink)
    assert checkpointer.checkpoint_and_commit(sink, source, lambda: False, lambda: None)
    assert source.commits == [{0: 8}] and len(CheckpointStore(blobs, exclusive=False).files()) == 1
    TrainerLease(blobs, "g").claim(source.generation() + 1)  # another trainer took over meanwhile
    processor.process(_records(8, 8), sink)
    assert not checkpointer.checkpoint_and_commit(sink, source, lambda: False, lambda: None)
    assert source.commits == [{0: 8}] and len(CheckpointStore(blobs, exclusive=False).files()) == 1
    assert checkpointer.fenced  # so /readyz answers 503 ("not_fenced": false) and hle_trainer_active is 0


# -- serving snapshots and a replica ------------------------------------------------------------
def _learner(method: str = "pl-fms") -> HierarchicalLearner:
    config = resolve_name(method, LearnerConfig(memory_size=16, batch_size=4, device="cpu"))
    learner = HierarchicalLearner(config, (DIM,), torch.float32)
    for _ in range(3):
        learner.observe(torch.randn(4, DIM), ["a", "a/x", "b", "b/y"])
    return learner


def test_a_snapshot_predicts_exactly_as_the_learner_it_was_taken_from(blobs):
    learner = _learner()
    assert read_snapshot(blobs) is None
    size = publish_snapshot(blobs, learner.predictor())
    snapshot = read_snapshot(blobs)
    assert newest_snapshot_marker(blobs)["version"] == learner.steps == snapshot.predictor.version
    assert size == snapshot.size_bytes
    x = torch.randn(5, DIM)
    for mine, theirs in zip(learner.predict_proba(x), snapshot.predictor.predict_proba(x)):
        torch.testing.assert_close(mine, theirs)
    assert snapshot.predictor.tree.path_of(2, 1) == learner.tree.path_of(2, 1)


def test_a_snapshot_has_no_optimizer_or_memory():
    state = _learner(DEFAULT_METHOD).predictor().state_dict()
    assert set(state) == {"snapshot_format", "backbone", "input_shape", "input_dtype", "decode", "tree",
                          "head_sizes", "net", "version", "discriminant", "discriminant_weight"}
    # the default method's discriminant travels as its per-class weights, not its training statistics
    assert set(state["discriminant"]) == {"weights", "biases", "known", "level_class_ids", "projection_seed",
                                          "input_dim", "normalise", "parents"}
    assert Predictor.from_state_dict(state).version == state["version"]


def test_a_replica_predicts_every_parseable_record_and_swaps_in_a_newer_snapshot(tmp_path):
    blobs = DirectoryBlobStore(tmp_path)
    learner = _learner()
    publish_snapshot(blobs, learner.predictor())
    replica = PredictorReplica(ReplicaConfig(http_port=None), blobs, connect=None)
    replica.refresh_snapshot()
    sink = ListSink()
    records = _records(0, 5) + [RawRecord("events", 0, 5, b"not json")]
    replica.predict_records(records, sink)
    assert [d["id"] for d in sink.predictions] == [f"e{i}" for i in range(5)]
    assert {d["model_version"] for d in sink.predictions} == {learner.steps}
    assert replica.next_offsets == {0: 6} and sink.dead_letters == []  # the trainer dead-letters, not replicas
    learner.observe(torch.randn(4, DIM), ["a", "a/x", "b", "b/z"])
    publish_snapshot(blobs, learner.predictor())
    replica.refresh_snapshot()
    assert replica.snapshot.version == learner.steps and replica.snapshot.tree.num_classes(2) == 3


def test_a_replica_never_swaps_to_an_older_version_and_counts_each_refusal(tmp_path):
    blobs = DirectoryBlobStore(tmp_path)
    learner = _learner()
    older = learner.predictor()
    learner.observe(torch.randn(4, DIM), ["a", "a/x", "b", "b/z"])
    replica = PredictorReplica(ReplicaConfig(http_port=None), blobs, connect=None)
    publish_snapshot(blobs, learner.predictor())
    replica.refresh_snapshot()
    publish_snapshot(blobs, older)  # a trainer that went back: an older checkpoint, published again
    replica.refresh_snapshot()
    replica.refresh_snapshot()  # read once, refused once
    assert replica.snapshot.version == learner.steps > older.version
    assert replica.telemetry.registry.get_sample_value("hle_snapshot_regressions_refused_total") == 1
    assert replica.telemetry.registry.get_sample_value("hle_model_version") == learner.steps  # what it serves


def test_a_restored_model_continues_its_versions_above_the_newest_published_snapshot():
    processor = MicroBatchProcessor(ProcessingConfig(learner_config=LearnerConfig(memory_size=16, device="cpu")))
    processor.process(_records(0, 20), ListSink())
    restored = processor.model_version
    assert processor.continue_versions_above(restored + 40)  # a predecessor published 40 steps beyond
    assert processor.model_version == restored + 41
    assert not processor.continue_versions_above(restored)  # already above: nothing to do
    sink = ListSink()
    processor.process(_records(20, 5), sink)
    assert {d["model_version"] for d in sink.predictions} == {restored + 41}
    again = MicroBatchProcessor(processor.config)
    again.load_state_dict(processor.state_dict())  # the base travels in the checkpoint
    assert again.model_version == processor.model_version


def test_a_replica_serves_with_the_trainers_calibrated_threshold_unless_given_its_own(tmp_path):
    blobs = DirectoryBlobStore(tmp_path)
    learner = _learner()
    following = PredictorReplica(ReplicaConfig(http_port=None), blobs, connect=None)
    own = PredictorReplica(ReplicaConfig(http_port=None, confidence_threshold=0.3), blobs, connect=None)
    publish_snapshot(blobs, learner.predictor())  # a trainer with a fixed threshold carries none
    following.refresh_snapshot()
    assert read_snapshot(blobs).confidence_threshold is None and following.confidence_threshold == 0.5
    learner.observe(torch.randn(4, DIM), ["a", "a/x", "b", "b/y"])
    publish_snapshot(blobs, learner.predictor(), confidence_threshold=0.87)
    for replica in (following, own):
        replica.refresh_snapshot()
    assert (following.confidence_threshold, own.confidence_threshold) == (0.87, 0.3)
    sink = ListSink()
    following.predict_records(_records(0, 20), sink)
    assert all(node["probability"] >= 0.87 for document in sink.predictions for node in document["path"])
