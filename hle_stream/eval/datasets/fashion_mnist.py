"""Fashion-MNIST with the 3-level hierarchy of Seo & Shin (2019): 2 → 6 → 10 classes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from hle_stream.eval.datasets.base import HierarchicalDataset

# Fine class id (as in the dataset) -> label path.
FASHION_PATHS = (
    "clothes/tops/t-shirt",
    "clothes/bottoms/trouser",
    "clothes/tops/pullover",
    "clothes/dresses/dress",
    "clothes/outers/coat",
    "goods/shoes/sandal",
    "clothes/tops/shirt",
    "goods/shoes/sneaker",
    "goods/accessories/bag",
    "goods/shoes/ankle-boot",
)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(bytearray(f.read()), dtype=np.uint8, offset=offset)


def load_fashion_mnist(root: Path) -> HierarchicalDataset:
    """Read the four standard idx files from ``root`` (``fashion-mnist/`` under the data root)."""
    paths = np.array(FASHION_PATHS)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
        labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 8)
        splits[split] = (images, paths[labels])
    return HierarchicalDataset("fashion-mnist", *splits["train"], *splits["test"])
