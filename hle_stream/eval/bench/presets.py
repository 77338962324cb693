"""Benchmark presets: how much of the data, how often to evaluate, the learner's settings.

``quick`` fits CI (well under 2 minutes on 2 CPU cores for two methods), ``cpu`` is the
reference run on 2 CPU cores, ``paper`` uses the paper's hyperparameters (§2.4: memory 2000,
batch 16, 3 updates per sample, ResNet-34 on images) and is meant for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from hle_stream.core.config import LearnerConfig


@dataclass(frozen=True)
class Preset:
    name: str
    train_limit: int | None  # stratified subsample of the training set (None: all)
    test_limit: int | None
    eval_period: int
    learner_config: LearnerConfig
    image_backbone: str = "auto"


PRESETS = {
    "quick": Preset("quick", 3000, 1000, 500,
                    LearnerConfig(memory_size=200, batch_size=16, online_iter=1.0, importance_period=8)),
    "cpu": Preset("cpu", 12000, 2000, 1000,
                  LearnerConfig(memory_size=500, batch_size=16, online_iter=1.0, importance_period=8)),
    "paper": Preset("paper", None, None, 1000,
                    LearnerConfig(memory_size=2000, batch_size=16, online_iter=3.0, importance_period=24),
                    image_backbone="resnet34"),
}
