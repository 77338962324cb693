"""Shared fixtures: small learners and datasets that make tests fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hle_stream.core.config import LearnerConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HLE_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture
def small_config() -> LearnerConfig:
    return LearnerConfig(memory_size=16, batch_size=8, online_iter=1.0, importance_period=2, seed=0, device="cpu")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield
