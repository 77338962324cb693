"""The learner's settings: every option declared once, with its part, its help and why it exists.

Each field of ``LearnerConfig`` is an option a user can set by name (``--learner KEY=VALUE``, a
``[learner]`` table in the config file); its metadata says which part of the learner it belongs
to, what it does, and the measured reason it is there (docs/method.md has the tables). The field
defaults are PL-FMS as released; a method (``hle_stream.core.methods``) is a preset of options on
top of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

PARTS = ("memory", "sampling", "supervision", "augmentation", "discriminant", "learning-rate", "model")
"""The parts of the learner, in the order the options are listed."""


def option(default: Any, part: str, help: str, why: str = "", run: dict[str, Any] | None = None) -> Any:
    """A learner option: its default, the part it belongs to, one line of help, the measured reason.
    ``run``: also an option of ``hle-stream run`` of the same name (``--memory-size``), with these
    bounds (``min``, ``max``) and conversions (``hle_stream.service.config`` reads them)."""
    assert part in PARTS, part
    return field(default=default, metadata={"part": part, "help": help, "why": why, "run": run})


@dataclass(frozen=True)
class LearnerConfig:
    """Everything that decides how a learner trains (one option per field; see ``option``)."""

    # memory: what the replay memory keeps, and how its samples are scored
    memory_size: int = option(500, "memory", "replay memory capacity, in samples", run={"min": 1})
    eviction: Literal["reservoir", "balanced-importance"] = option(
        "balanced-importance", "memory",
        "which sample a full memory drops: a uniform reservoir, or the least important of the fullest class",
        "balanced bins (pl-fms-reference vs er-paper): synthetic deep tree hard finest +15.0")
    insert_before_training: bool = option(
        True, "memory", "a stream sample enters the memory before the step that learns it (PL-FMS), not after (ER)",
        "part of PL-FMS (with eviction and flexible_sampling): Fashion-MNIST cpu finest 72.3 vs ER 70.3")
    importance_period: int = option(5, "memory", "training steps between two importance scorings")
    importance_ema: float = option(0.9, "memory", "weight of a slot's previous importance when it is re-scored")
    importance_probe: int | None = option(
        64, "memory", "memory slots re-scored per importance scoring (none: the whole memory, as released)",
        "with the EMA rule (pl-fms vs pl-fms-reference): Fashion-MNIST cpu finest A_auc 72.3 vs 71.6",
        run={"min": 0, "type": int, "parse": lambda size: size or None, "shown": lambda size: size or 0,
             "help": "memory slots re-scored per importance scoring (0: the whole memory, as released)"})
    importance_rule: Literal["ema", "released"] = option(
        "ema", "memory", "how importance moves: an EMA of the loss change, or the released running sum")
    pseudo_labels: bool = option(
        False, "memory", "memory samples carry confident predictions below their labelled level (counted in "
        "eviction and importance)", "not kept: Fashion-MNIST cpu (2026-11-28) finest 71.7 vs 72.6 without, L2 78.2 vs 80.0")
    pseudo_threshold: float = option(0.75, "memory", "confidence a pseudo-label needs")
    # sampling: what a training step is made of
    batch_size: int = option(16, "sampling", "training batch: half stream samples, half replayed", run={"min": 2})
    online_iter: float = option(1.0, "sampling", "gradient steps per stream sample")
    flexible_sampling: bool = option(
        True, "sampling", "flexible memory sampling: a new class's stream samples are kept with a probability "
        "that ramps up, so it is learned from memory first (PL-FMS)", "part of PL-FMS, see insert_before_training")
    fms_horizon: int | None = option(None, "sampling", "the ramp's length Z in samples (none: a running estimate)")
    # supervision: which levels a sample teaches, and the loss
    supervision: Literal["own-level", "path"] = option(
        "own-level", "supervision", "levels a stream sample teaches: its own, or every level its path names",
        "path: Fashion-MNIST cpu L2 82.2 vs 80.0, but 20 Newsgroups single-label L1 F_last 18.0 vs ER 5.7")
    replay_supervision: Literal["own-level", "path"] = option(
        "own-level", "supervision", "levels a replayed sample teaches: its own, or its whole path",
        "path: Fashion-MNIST cpu L2 +2.2 A_auc over pl-fms (82.2 vs 80.0); 20 Newsgroups +1.3 finest")
    replay_ancestor_weight: float = option(
        1.0, "supervision", "loss weight of a replayed sample's levels above its own",
        "0.1: 20 Newsgroups single-label L1 F_last 8.8 vs 13.0 at 1 (the top level tilts less to a new group)")
    replay_path_after_ramp: bool = option(
        False, "supervision", "a replayed sample teaches its ancestors only once its class is past its FMS ramp",
        "with replay_ancestor_weight=0.1: 20 Newsgroups single-label L1 F_last 6.4, was 13.0 (ER 5.7)")
    asymmetric_loss: bool = option(
        False, "supervision", "ER-ACE's loss: a stream sample's softmax runs over the incoming batch's classes",
        "a baseline (er-ace vs er): Fashion-MNIST cpu finest 70.6 vs 70.3, 20 Newsgroups 68.6 vs 70.9")
    pseudo_loss_weight: float = option(0.0, "supervision", "weight of pseudo-labels in the training loss (0: not trained on)")
    # augmentation
    augment: bool = option(True, "augmentation", "random crop and flip of image inputs in training steps")
    cutmix: bool = option(True, "augmentation", "CutMix within a level for image inputs, half the steps")
    augmentation: Literal["images", "colour-images"] = option(
        "images", "augmentation", "which images crop/flip and CutMix apply to: all, or colour (3+ channels) only",
        "colour-images: on Fashion-MNIST (grayscale) crop/flip and CutMix cost 4-6 points at levels 2-3")
    vector_dropout: float = option(
        0.0, "augmentation", "share of a vector input's features zeroed in training steps (the rest scaled up)",
        "0.5: 20 Newsgroups cpu finest A_auc +1.1 for hle (76.1 vs 75.0), +1.9 for er")
    # discriminant: the second expert
    discriminant_weight: float = option(
        0.0, "discriminant", "power of a streaming linear discriminant's probabilities multiplied into every "
        "prediction (0: no discriminant)",
        "1: Fashion-MNIST cpu finest A_auc 81.0 vs 76.9 without; 20 Newsgroups 73.3 vs 71.8")
    discriminant_shrinkage: float = option(0.1, "discriminant", "shrinkage of its covariance toward the identity")
    discriminant_normalise: bool = option(False, "discriminant", "its input rows scaled to unit length")
    discriminant_decode: Literal["flat", "tree"] = option(
        "flat", "discriminant", "its levels scored flat, or along the tree (parent's probability x share among "
        "siblings)", "unit rows + tree: 20 Newsgroups cpu finest 75.0 vs 73.3")
    # learning rate
    lr: float = option(3e-4, "learning-rate", "Adam's base learning rate")
    adaptive_lr: bool = option(
        True, "learning-rate", "CLIB's adaptive learning rate, tested on the importance scorings' loss changes")
    adaptive_lr_period: int = option(10, "learning-rate", "importance scorings per adaptive-LR trial window")
    adaptive_lr_sliding: bool = option(False, "learning-rate", "re-test over a sliding window at every switch (as released)")
    exp_reset_gamma: float | None = option(
        None, "learning-rate", "the released baselines' schedule: decay by gamma per step, reset on a new class",
        "ER as the paper ran it (er-paper); constant is the stronger baseline")
    # model and runtime
    backbone: str = option("auto", "model", "network body: auto (small-cnn for images, mlp for vectors), small-cnn, "
                                            "mlp, resnet18 or resnet34")
    decode: Literal["independent", "path"] = option(
        "independent", "model", "how a level's probabilities are read: each level alone, or along the tree",
        "path: with path replay, 20 Newsgroups cpu finest 71.9 (pl-fms-replay-path) vs pl-fms 70.6")
    amp: bool = option(True, "model", "bfloat16 autocast on CUDA")
    max_depth: int = option(8, "model", "deepest label level accepted")
    max_classes: int = option(10_000, "model", "class cap over all levels", run={"min": 1})
    device: str = option("auto", "model", "auto (CUDA when present), cpu or cuda", run={})
    seed: int = option(0, "model", "seeds the weights, sampling and augmentation")

    @property
    def stream_batch_size(self) -> int:
        """New stream samples per training step: half the batch, the other half is replayed."""
        return max(1, self.batch_size // 2)

    def with_(self, **changes: object) -> "LearnerConfig":
        return replace(self, **changes)
