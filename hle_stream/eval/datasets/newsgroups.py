"""20 Newsgroups (bydate), 3 levels: 7 → 16 → 20, as TF-IDF + truncated SVD feature vectors
(``20news``) or as the raw posts (``20news-text``, for a text encoder).

Features are fitted on the training posts only and cached, since the fit takes seconds.
Headers are dropped up to the first blank line: the ``Newsgroups:`` header leaks the label.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from connectors.extras import import_extra
from hle_stream.eval.datasets.base import HierarchicalDataset

FEATURE_DIM = 256
POST_CHARS = 4096
"""A raw post is kept to its first this many characters: far more than an encoder reads (512 word
pieces of English are about 2,500 characters), and short enough for an event and an .npz."""


def group_path(group: str) -> str:
    """``comp.sys.mac.hardware`` → ``comp/comp.sys/comp.sys.mac.hardware``."""
    parts = group.split(".")
    return f"{parts[0]}/{'.'.join(parts[:2])}/{group}"


def _read_posts(archive: Path) -> dict[str, tuple[list[str], list[str]]]:
    posts: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3:
                continue
            split = "train" if parts[-3].endswith("train") else "test"
            raw = tar.extractfile(member).read().decode("latin-1")
            body = raw.split("\n\n", 1)[1] if "\n\n" in raw else raw
            posts[split][0].append(body)
            posts[split][1].append(group_path(parts[-2]))
    return posts


def _features(posts: dict[str, tuple[list[str], list[str]]]) -> tuple[np.ndarray, np.ndarray]:
    import_extra("sklearn", "bench", "the 20news features (TF-IDF + SVD)")
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.5, stop_words="english", max_features=50_000)
    svd = TruncatedSVD(FEATURE_DIM, random_state=0)
    train = svd.fit_transform(tfidf.fit_transform(posts["train"][0]))
    test = svd.transform(tfidf.transform(posts["test"][0]))
    scaler = StandardScaler().fit(train)
    return scaler.transform(train).astype(np.float32), scaler.transform(test).astype(np.float32)


def load_newsgroups(root: Path, cache_dir: Path) -> HierarchicalDataset:
    """Load ``20news-bydate.tgz`` from ``root``; features cached under ``cache_dir``."""
    cache = cache_dir / f"20news-tfidf-svd{FEATURE_DIM}.npz"
    if not cache.exists():
        posts = _read_posts(root / "20news-bydate.tgz")
        x_train, x_test = _features(posts)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, x_train=x_train, y_train=np.array(posts["train"][1]),
                 x_test=x_test, y_test=np.array(posts["test"][1]))
        tmp.replace(cache)
    data = np.load(cache)
    return HierarchicalDataset("20news", data["x_train"], data["y_train"], data["x_test"], data["y_test"])


def load_newsgroup_posts(root: Path) -> HierarchicalDataset:
    """The raw posts (headers dropped, cut to ``POST_CHARS``) of ``20news-bydate.tgz`` in ``root``."""
    posts = _read_posts(root / "20news-bydate.tgz")
    texts = {split: np.array([post[:POST_CHARS] for post in posts[split][0]], dtype=object) for split in posts}
    return HierarchicalDataset("20news-text", texts["train"], np.array(posts["train"][1]),
                               texts["test"], np.array(posts["test"][1]))
