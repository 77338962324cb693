"""Where data lives: the shared datasets beside the repository, and a cache for features."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_root() -> Path:
    """``$HLE_DATA_ROOT`` if set, else ``../shared/data`` relative to the repository root."""
    return Path(os.environ.get("HLE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


def default_cache_dir() -> Path:
    """``$HLE_CACHE_DIR`` if set, else ``~/.cache/hle-stream`` (derived features, e.g. TF-IDF)."""
    return Path(os.environ.get("HLE_CACHE_DIR", Path.home() / ".cache" / "hle-stream"))
