"""CIFAR-100 from the standard ``cifar-100-python`` pickles: 20 superclasses → 100 classes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from hle_stream.eval.datasets.base import HierarchicalDataset


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def load_cifar100(root: Path) -> HierarchicalDataset:
    """``root`` is the ``cifar-100-python`` folder holding ``train``, ``test`` and ``meta``."""
    meta = _unpickle(root / "meta")
    fine_names, coarse_names = meta["fine_label_names"], meta["coarse_label_names"]
    splits = []
    for split in ("train", "test"):
        batch = _unpickle(root / split)
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.array([f"{coarse_names[c]}/{fine_names[f]}"
                           for c, f in zip(batch["coarse_labels"], batch["fine_labels"])])
        splits += [images, labels]
    return HierarchicalDataset("cifar100", *splits)
