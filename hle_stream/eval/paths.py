"""Where the repository is, and the cache for downloaded datasets and derived features."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """``$HLE_CACHE_DIR`` if set, else ``~/.cache/hle-stream`` (derived features, e.g. TF-IDF)."""
    return Path(os.environ.get("HLE_CACHE_DIR", Path.home() / ".cache" / "hle-stream"))
