import torch

from hle_stream.checkpoint import CheckpointStore


def test_the_newest_checkpoint_loads_and_only_the_last_k_are_kept(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for i in range(4):
        store.save({"n": i, "t": torch.tensor([i])})
    assert len(list(tmp_path.glob("checkpoint-*.pt"))) == 2
    assert store.load_latest()["n"] == 3


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save({"n": 1})
    newest = store.save({"n": 2})
    newest.write_bytes(newest.read_bytes()[:20])
    assert store.load_latest()["n"] == 1
    assert CheckpointStore(tmp_path / "empty").load_latest() is None
