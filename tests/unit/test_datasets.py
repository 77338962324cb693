import pickle

import numpy as np
import pytest

from hle_stream.core.hierarchy import LabelPathError
from hle_stream.eval.bench.presets import PRESETS
from hle_stream.eval.datasets import DatasetFormatError, load_dataset, load_npz, save_npz
from hle_stream.eval.datasets.cifar100 import load_cifar100
from hle_stream.eval.datasets.synthetic import make_synthetic
from tests.conftest import SHARED_DATA


def test_cifar100_loader_reads_the_standard_pickles(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "bee", "cat"], "coarse_label_names": ["fruit", "animal"]}, f)
    for split, n in (("train", 6), ("test", 3)):
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                 "fine_labels": [0, 1, 2, 0, 1, 2][:n], "coarse_labels": [0, 1, 1, 0, 1, 1][:n]}
        with open(root / split, "wb") as f:
            pickle.dump(batch, f)
    ds = load_cifar100(root)
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert list(ds.labels_test) == ["fruit/apple", "animal/bee", "animal/cat"]
    assert ds.classes_per_level() == [2, 3]


@pytest.mark.skipif(not (SHARED_DATA / "fashion-mnist").exists(), reason="shared data not beside the repo")
def test_fashion_mnist_has_the_published_three_level_hierarchy():
    ds = load_dataset("fashion-mnist", data_root=SHARED_DATA)
    assert ds.x_train.shape == (60000, 1, 28, 28) and len(ds.x_test) == 10000
    assert ds.classes_per_level() == [2, 6, 10]
    assert set(ds.labels_train) >= {"clothes/tops/shirt", "goods/shoes/ankle-boot"}


def test_user_npz_round_trip_keeps_split_and_labels(tmp_path):
    ds = make_synthetic(branching=(2, 2), train_per_leaf=5, test_per_leaf=2)
    path = tmp_path / "mine.npz"
    save_npz(ds, path)
    back = load_npz(path)
    assert np.array_equal(back.x_train, ds.x_train) and list(back.labels_test) == list(ds.labels_test)


def test_user_npz_without_split_holds_out_a_fifth(tmp_path):
    path = tmp_path / "nosplit.npz"
    np.savez(path, x=np.zeros((50, 3), np.float32), label=np.array(["a/b"] * 50))
    ds = load_npz(path)
    assert (len(ds.x_train), len(ds.x_test)) == (40, 10)


@pytest.mark.parametrize("arrays, message", [
    (dict(x=np.zeros((4, 3), np.float32)), "missing"),
    (dict(x=np.zeros((4,), np.float32), label=np.array(["a"] * 4)), "N×D"),
    (dict(x=np.zeros((4, 1, 2, 2), np.float32), label=np.array(["a"] * 4)), "uint8"),
    (dict(x=np.zeros((4, 3), np.float32), label=np.array(["a"] * 3)), "labels"),
    (dict(x=np.zeros((2, 3), np.float32), label=np.array(["a", "b"]), split=np.array(["train", "dev"])), "split"),
])
def test_user_npz_format_errors_are_explained(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetFormatError, match=message):
        load_npz(path)


def test_user_npz_with_a_malformed_label_path_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((2, 3), np.float32), label=np.array(["a/b", "a//c"]))
    with pytest.raises(LabelPathError):
        load_npz(path)


def test_the_deep_synthetic_tree_has_96_leaves_over_five_levels_and_the_hard_preset_a_small_memory():
    dataset = load_dataset("synthetic-deep")
    leaves = set(dataset.labels_train)
    assert len(leaves) == 96 and all(leaf.count("/") == 4 for leaf in leaves)
    assert [len({"/".join(leaf.split("/")[:depth]) for leaf in leaves}) for depth in range(1, 5)] == [2, 4, 8, 16]
    assert len(dataset.labels_train) == 24_000 and dataset.x_train.shape[1] == 64
    assert PRESETS["hard"].memory_size_for(24_000) == 480  # 2 % of the stream
