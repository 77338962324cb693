"""A text dataset as the vectors an encoder gives it, cached per (dataset, encoder, max length).

The encoder is frozen, so a text's vector never changes: the benchmark embeds a dataset once
(about 20 minutes for 20 Newsgroups at 256 word pieces on 2 CPU cores) and reads the cache after.
The vectors are those the daemon computes for the same texts (``hle_stream.text.encoder``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from hle_stream.eval.datasets.base import HierarchicalDataset
from hle_stream.text.encoder import EncoderChoice, TextEncoder

log = logging.getLogger(__name__)


def embedding_cache(cache_dir: Path, dataset_key: str, choice: EncoderChoice) -> Path:
    return cache_dir / "embeddings" / f"{dataset_key}-{choice.cache_key}.npz"


def embedded(dataset: HierarchicalDataset, choice: EncoderChoice, cache_dir: Path, dataset_key: str,
             device: str = "cpu") -> HierarchicalDataset:
    """``dataset`` (texts) with each text replaced by its vector; ``dataset_key`` names the texts
    (a built-in dataset's name, or a digest of a user's file)."""
    cache = embedding_cache(cache_dir, dataset_key, choice)
    if not cache.exists():
        encoder = TextEncoder(choice, device)
        started = time.perf_counter()
        x_train, x_test = encoder.encode(list(dataset.x_train)), encoder.encode(list(dataset.x_test))
        log.info("embedded %d texts in %.0f s", len(x_train) + len(x_test), time.perf_counter() - started)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, x_train=x_train, x_test=x_test, identity=np.array(repr(choice.identity)))
        tmp.replace(cache)
    with np.load(cache) as data:
        x_train, x_test = data["x_train"], data["x_test"]
    if len(x_train) != len(dataset.x_train) or len(x_test) != len(dataset.x_test):
        raise ValueError(f"{cache} holds {len(x_train)} + {len(x_test)} vectors for {len(dataset.x_train)} + "
                         f"{len(dataset.x_test)} texts: delete it to embed again")
    return HierarchicalDataset(dataset.name, x_train, dataset.labels_train, x_test, dataset.labels_test)
