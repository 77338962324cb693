"""Datasets with hierarchical labels: built-in loaders and the user ``.npz`` format."""

from __future__ import annotations

from pathlib import Path

from hle_stream.eval.datasets.base import HierarchicalDataset
from hle_stream.eval.datasets.cifar100 import load_cifar100
from hle_stream.eval.datasets.fashion_mnist import load_fashion_mnist
from hle_stream.eval.datasets.newsgroups import load_newsgroups
from hle_stream.eval.datasets.synthetic import make_synthetic
from hle_stream.eval.datasets.user_npz import DatasetFormatError, load_npz, save_npz
from hle_stream.eval.paths import default_cache_dir, default_data_root

DATASETS = ("fashion-mnist", "20news", "synthetic", "cifar100")

__all__ = ["DATASETS", "DatasetFormatError", "HierarchicalDataset", "load_dataset", "load_npz", "save_npz"]


def load_dataset(
    name: str | None = None,
    npz: Path | None = None,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
) -> HierarchicalDataset:
    """A built-in dataset by ``name`` (read under ``data_root``) or a user file ``npz``.

    CIFAR-100 is looked for in ``data_root/cifar100/cifar-100-python``.
    """
    if npz is not None:
        return load_npz(Path(npz))
    root = Path(data_root) if data_root else default_data_root()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if name == "fashion-mnist":
        return load_fashion_mnist(root / "fashion-mnist")
    if name == "20news":
        return load_newsgroups(root / "20news", cache)
    if name == "synthetic":
        return make_synthetic()
    if name == "cifar100":
        return load_cifar100(root / "cifar100" / "cifar-100-python")
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)} or give an .npz")
