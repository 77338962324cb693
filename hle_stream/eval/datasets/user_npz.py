"""A user's own dataset as ``.npz``: how people bring their data to the benchmark and producer.

Arrays: ``x`` (float32 N×D vectors, or uint8 N×C×H×W images) or, instead, ``text`` (N strings,
which a text encoder turns into vectors), ``label`` (N label-path strings, e.g.
``clothes/tops/shirt``) and, optionally, ``split`` (N strings, ``train`` or ``test``). Without
``split`` a seeded 20 % of the samples is held out for testing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from hle_stream.core.hierarchy import LabelTree
from hle_stream.eval.datasets.base import HierarchicalDataset

HOLDOUT_FRACTION = 0.2


class DatasetFormatError(ValueError):
    """The file does not follow the format in this module's docstring."""


def load_npz(path: Path, seed: int = 0) -> HierarchicalDataset:
    with np.load(path, allow_pickle=False) as data:
        missing = [name for name in ("label",) if name not in data.files]
        if "x" not in data.files and "text" not in data.files:
            missing.append("x (or text)")
        if missing:
            raise DatasetFormatError(f"{path}: missing array(s) {', '.join(missing)}; need label and x (or text)")
        if "x" in data.files and "text" in data.files:
            raise DatasetFormatError(f"{path}: holds both x and text; give one")
        x = data["x"] if "x" in data.files else _texts(path, data["text"])
        labels = data["label"].astype(str)
        split = data["split"].astype(str) if "split" in data.files else None
    if x.dtype != object:  # not texts
        x = _features(path, x)
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


def _features(path: Path, x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        return x.astype(np.float32, copy=False)
    if x.ndim == 4 and x.dtype == np.uint8:
        return x
    if x.ndim == 4:
        raise DatasetFormatError(f"{path}: images (N×C×H×W) must be uint8, got {x.dtype}")
    raise DatasetFormatError(f"{path}: x must be N×D or N×C×H×W, got shape {x.shape}")


def _texts(path: Path, array: np.ndarray) -> np.ndarray:
    """N strings (numpy ``U``, or ``S`` holding UTF-8) as an object array of ``str``."""
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise DatasetFormatError(f"{path}: text must be N strings, got {array.dtype} of shape {array.shape}")
    try:
        return np.array([t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in array.tolist()], dtype=object)
    except UnicodeDecodeError as err:
        raise DatasetFormatError(f"{path}: a text is not UTF-8: {err}") from None


def file_digest(path: Path) -> str:
    """Names a user's file's content (the key of its cached text embeddings)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def save_npz(dataset: HierarchicalDataset, path: Path) -> None:
    """Write ``dataset`` in the user format (with ``split``), e.g. to share or to edit; texts as
    a ``text`` array."""
    samples = np.concatenate([dataset.x_train, dataset.x_test])
    np.savez_compressed(
        path,
        **({"text": samples.astype(str)} if dataset.is_text else {"x": samples}),
        label=np.concatenate([dataset.labels_train, dataset.labels_test]).astype(str),
        split=np.array(["train"] * len(dataset.x_train) + ["test"] * len(dataset.x_test)),
    )
