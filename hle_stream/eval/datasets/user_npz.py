"""A user's own dataset as ``.npz``: how people bring their data to the benchmark and producer.

Arrays: ``x`` (float32 N×D vectors, or uint8 N×C×H×W images), ``label`` (N label-path strings,
e.g. ``clothes/tops/shirt``) and, optionally, ``split`` (N strings, ``train`` or ``test``).
Without ``split`` a seeded 20 % of the samples is held out for testing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hle_stream.core.hierarchy import LabelTree
from hle_stream.eval.datasets.base import HierarchicalDataset

HOLDOUT_FRACTION = 0.2


class DatasetFormatError(ValueError):
    """The file does not follow the format in this module's docstring."""


def load_npz(path: Path, seed: int = 0) -> HierarchicalDataset:
    with np.load(path, allow_pickle=False) as data:
        missing = {"x", "label"} - set(data.files)
        if missing:
            raise DatasetFormatError(f"{path}: missing array(s) {sorted(missing)}; need x and label")
        x, labels = data["x"], data["label"].astype(str)
        split = data["split"].astype(str) if "split" in data.files else None
    if x.ndim == 2:
        x = x.astype(np.float32, copy=False)
    elif x.ndim == 4:
        if x.dtype != np.uint8:
            raise DatasetFormatError(f"{path}: images (N×C×H×W) must be uint8, got {x.dtype}")
    else:
        raise DatasetFormatError(f"{path}: x must be N×D or N×C×H×W, got shape {x.shape}")
    if len(labels) != len(x):
        raise DatasetFormatError(f"{path}: {len(x)} samples but {len(labels)} labels")
    tree = LabelTree(max_depth=64, max_classes=10**9)
    for label in set(labels.tolist()):
        tree.split(label)  # raises LabelPathError with the offending path
    if split is None:
        order = np.random.default_rng(seed).permutation(len(x))
        split = np.full(len(x), "train", dtype=object)
        split[order[: int(len(x) * HOLDOUT_FRACTION)]] = "test"
    unknown = set(split.tolist()) - {"train", "test"}
    if unknown:
        raise DatasetFormatError(f"{path}: split values must be 'train' or 'test', got {sorted(unknown)}")
    train, test = split == "train", split == "test"
    return HierarchicalDataset(Path(path).stem, x[train], labels[train], x[test], labels[test])


def save_npz(dataset: HierarchicalDataset, path: Path) -> None:
    """Write ``dataset`` in the user format (with ``split``), e.g. to share or to edit."""
    np.savez_compressed(
        path,
        x=np.concatenate([dataset.x_train, dataset.x_test]),
        label=np.concatenate([dataset.labels_train, dataset.labels_test]).astype(str),
        split=np.array(["train"] * len(dataset.x_train) + ["test"] * len(dataset.x_test)),
    )
