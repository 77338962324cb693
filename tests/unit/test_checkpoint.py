import io

import pytest
import torch

from hle_stream.service.checkpoint import CheckpointStore, IncompatibleCheckpointError


def test_the_newest_checkpoint_loads_and_only_the_last_k_are_kept(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for i in range(4):
        store.save({"n": i, "t": torch.tensor([i])})
    assert len(list(tmp_path.glob("checkpoint-*.pt"))) == 2
    state, report = store.load_latest()
    assert state["n"] == 3 and report.path.name == "checkpoint-000000004.pt" and report.corrupt == []


@pytest.mark.parametrize("damage", ["truncate", "flip_one_byte", "garbage"])
def test_a_corrupt_newest_checkpoint_is_quarantined_and_the_previous_one_used(tmp_path, damage):
    store = CheckpointStore(tmp_path)
    store.save({"n": 1, "t": torch.zeros(1000)})
    newest = store.save({"n": 2, "t": torch.ones(1000)})
    blob = bytearray(newest.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip_one_byte":  # inside the tensor data: torch.load alone would not notice
        blob[-600] ^= 0x01
    else:
        blob = bytearray(b"\x00" * len(blob))
    newest.write_bytes(bytes(blob))

    state, report = store.load_latest()
    assert state["n"] == 1
    assert [p.name for p in report.corrupt] == ["checkpoint-000000002.corrupt"]
    assert store.save({"n": 3}).name == "checkpoint-000000002.pt"  # the corrupt one no longer counts
    assert store.load_latest()[0]["n"] == 3


def test_no_checkpoint_and_an_interrupted_write_leave_nothing_to_load(tmp_path):
    (tmp_path / "checkpoint-000000001.tmp").write_bytes(b"half a write")
    store = CheckpointStore(tmp_path)
    assert store.load_latest()[0] is None
    assert not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_of_another_format_is_refused_with_a_clear_message(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.save({"n": 1})
    path.write_bytes(path.read_bytes().replace(b"HLECKPT 2 ", b"HLECKPT 9 ", 1))
    with pytest.raises(IncompatibleCheckpointError, match="format 9; this hle-stream reads format 2"):
        store.load_latest()
    old = io.BytesIO()
    torch.save({"n": 0}, old)  # format 1: a bare torch.save file
    path.write_bytes(old.getvalue())
    with pytest.raises(IncompatibleCheckpointError, match="format 1"):
        store.load_latest()


def test_a_checkpoint_never_runs_code_from_the_file(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code from a checkpoint ran')",))

    import hashlib
    import pickle

    data = io.BytesIO()
    torch.save({"n": Payload()}, data, pickle_module=pickle)
    blob = data.getvalue()
    (tmp_path / "checkpoint-000000001.pt").write_bytes(
        b"HLECKPT 2 " + hashlib.sha256(blob).hexdigest().encode() + b"\n" + blob)
    state, report = CheckpointStore(tmp_path).load_latest()  # weights_only refuses it: treated as unusable
    assert state is None and len(report.corrupt) == 1


def test_a_second_store_on_the_same_directory_is_refused_while_the_first_holds_it(tmp_path):
    from hle_stream.service.checkpoint import CheckpointDirLockedError

    first = CheckpointStore(tmp_path)
    first.save({"n": 1})
    with pytest.raises(CheckpointDirLockedError, match="in use by another hle-stream"):
        CheckpointStore(tmp_path)
    first.close()
    assert not (tmp_path / ".lock").exists()  # nothing left behind once released
    second = CheckpointStore(tmp_path)
    assert second.load_latest()[0] == {"n": 1}  # free again once released
    with pytest.raises(CheckpointDirLockedError):
        CheckpointStore(tmp_path)  # and held again by the new holder's own lock file
    second.close()


def test_the_store_deletes_only_files_of_its_own_naming(tmp_path):
    foreign = [tmp_path / name for name in ("checkpoint-notes.txt", "checkpoint-7.pt", "checkpoint-backup.tmp")]
    for path in foreign:
        path.write_text("someone else's")
    store = CheckpointStore(tmp_path, keep=1)
    for i in range(3):
        store.save({"n": i})
    assert all(path.exists() for path in foreign)
    assert [p.name for p in store.files()] == ["checkpoint-000000003.pt"]


def test_a_failed_write_raises_and_leaves_the_previous_checkpoints_and_no_temporary_file(tmp_path, monkeypatch):
    import errno
    import os

    store = CheckpointStore(tmp_path)
    store.save({"n": 1})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.save({"n": 2})
    monkeypatch.undo()
    assert list(tmp_path.glob("*.tmp")) == []
    assert store.load_latest()[0] == {"n": 1}
