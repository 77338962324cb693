"""Datasets with hierarchical labels: built-in loaders and the user ``.npz`` format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hle_stream.eval.datasets.base import HierarchicalDataset
from hle_stream.eval.datasets.cifar100 import load_cifar100
from hle_stream.eval.datasets.fashion_mnist import load_fashion_mnist
from hle_stream.eval.datasets.newsgroups import load_newsgroup_posts, load_newsgroups
from hle_stream.eval.datasets.sources import missing_message, search_roots
from hle_stream.eval.datasets.synthetic import make_synthetic, make_synthetic_deep
from hle_stream.eval.datasets.text_embeddings import embedded, embedding_cache
from hle_stream.eval.datasets.user_npz import DatasetFormatError, file_digest, load_npz, save_npz
from hle_stream.eval.paths import default_cache_dir
from hle_stream.text.encoder import EncoderChoice

DATASETS = ("fashion-mnist", "20news", "20news-text", "synthetic", "synthetic-deep", "cifar100")
TEXT_DATASETS = ("20news-text",)  # raw texts: the bench embeds them with a text encoder

__all__ = ["DATASETS", "DatasetFormatError", "DatasetUnavailable", "dataset_folder", "HierarchicalDataset", "load_dataset", "load_npz", "save_npz"]


FOLDERS = {"fashion-mnist": Path("fashion-mnist"), "20news": Path("20news"), "20news-text": Path("20news"),
           "cifar100": Path("cifar100") / "cifar-100-python"}  # under the data root; the synthetic ones need none


class DatasetUnavailable(FileNotFoundError):
    """A built-in dataset whose files are not where they are looked for, or an unknown name."""


def dataset_folder(name: str, data_root: Path | None = None) -> Path | None:
    """Where built-in dataset ``name`` is read from (``None``: it needs no files): the first of
    ``search_roots`` that holds its folder. Raises ``DatasetUnavailable`` for an unknown name or
    a dataset found nowhere (the message says how to get it), before anything slow happens."""
    if name not in DATASETS:
        raise DatasetUnavailable(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)} or give an .npz")
    if name not in FOLDERS:
        return None
    roots = search_roots(data_root)
    for root in roots:
        if (root / FOLDERS[name]).is_dir():
            return root / FOLDERS[name]
    raise DatasetUnavailable(missing_message(name, FOLDERS[name], roots))


def load_dataset(
    name: str | None = None,
    npz: Path | None = None,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    encoder: EncoderChoice | None = EncoderChoice(),
) -> HierarchicalDataset:
    """A built-in dataset by ``name`` (read under ``data_root``) or a user file ``npz``. A text
    dataset comes as ``encoder``'s vectors (cached under ``cache_dir``), or as its raw texts when
    ``encoder`` is None (to export or stream them)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    dataset = load_npz(Path(npz)) if npz is not None else _built_in(name, data_root, cache)
    if not dataset.is_text or encoder is None:
        return dataset
    return embedded(dataset, encoder, cache, file_digest(Path(npz)) if npz is not None else name)


def text_dataset_cache(name: str | None, npz: Path | None, encoder: EncoderChoice,
                       cache_dir: Path | None = None) -> Path | None:
    """Where ``load_dataset`` keeps a text dataset's vectors (None: not a text dataset)."""
    if npz is not None:
        with np.load(npz, allow_pickle=False) as data:
            if "text" not in data.files:
                return None
        key = file_digest(Path(npz))
    elif name in TEXT_DATASETS:
        key = name
    else:
        return None
    return embedding_cache(Path(cache_dir) if cache_dir else default_cache_dir(), key, encoder)


def _built_in(name: str | None, data_root: Path | None, cache: Path) -> HierarchicalDataset:
    folder = dataset_folder(name, data_root)
    if name == "fashion-mnist":
        return load_fashion_mnist(folder)
    if name == "20news":
        return load_newsgroups(folder, cache)
    if name == "20news-text":
        return load_newsgroup_posts(folder)
    if name == "cifar100":
        return load_cifar100(folder)
    if name == "synthetic-deep":
        return make_synthetic_deep()
    return make_synthetic()
