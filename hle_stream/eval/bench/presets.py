"""Benchmark presets: how much of the data, how often to evaluate, the learner's settings.

``quick`` fits CI (well under 2 minutes on 2 CPU cores for two methods), ``cpu`` is the
reference run on 2 CPU cores, ``hard`` is the regime where hierarchy-aware replay should
matter (a memory of 2 % of the stream: real taxonomies have many fine classes and a memory
small beside the stream; a run fits 10 minutes on 2 cores), ``paper`` uses the paper's
hyperparameters (memory 2000, batch 16, 3 updates per sample, ResNet-34 on images) and is
meant for a GPU. ``customised`` places a run elsewhere (the bench's ``--memory-size``,
``--memory-share`` and ``--online-iter``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hle_stream.core.config import LearnerConfig


@dataclass(frozen=True)
class Preset:
    name: str
    train_limit: int | None  # stratified subsample of the training set (None: all)
    test_limit: int | None
    eval_period: int
    learner_config: LearnerConfig
    image_backbone: str = "auto"
    memory_share: float | None = None  # memory as a share of the stream's length (None: learner_config's size)

    def memory_size_for(self, stream_length: int) -> int:
        if self.memory_share is None:
            return self.learner_config.memory_size
        return max(1, round(self.memory_share * stream_length))


PRESETS = {
    "quick": Preset("quick", 3000, 1000, 500,
                    LearnerConfig(memory_size=200, batch_size=16, online_iter=1.0, importance_period=8)),
    "cpu": Preset("cpu", 12000, 2000, 1000,
                  LearnerConfig(memory_size=500, batch_size=16, online_iter=1.0, importance_period=8)),
    "hard": Preset("hard", 24000, 2000, 1000,
                   LearnerConfig(batch_size=16, online_iter=1.0, importance_period=8), memory_share=0.02),
    "paper": Preset("paper", None, None, 1000,
                    LearnerConfig(memory_size=2000, batch_size=16, online_iter=3.0, importance_period=24),
                    image_backbone="resnet34"),
}


def customised(preset: Preset, memory_size: int | None = None, memory_share: float | None = None,
               online_iter: float | None = None) -> Preset:
    """``preset`` with a memory of ``memory_size`` samples or ``memory_share`` of the stream, and
    ``online_iter`` steps per sample. The importance period follows ``online_iter`` as in the
    released multi-depth code: one scoring per ``online_iter × stream batch`` steps."""
    if memory_size is not None and memory_share is not None:
        raise ValueError("give a memory size or a memory share, not both")
    config = preset.learner_config
    if memory_size is not None:
        preset = replace(preset, memory_share=None)
        config = config.with_(memory_size=memory_size)
    if memory_share is not None:
        preset = replace(preset, memory_share=memory_share)
    if online_iter is not None:
        config = config.with_(online_iter=online_iter,
                              importance_period=max(1, round(online_iter * config.stream_batch_size)))
    return replace(preset, learner_config=config)
