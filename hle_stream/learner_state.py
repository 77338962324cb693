"""Save and restore a whole learner as tensors and plain data (no pickled objects).

The state holds what the next training step depends on: configuration, label tree, network
and optimizer (grown heads included), replay memory with importance and pseudo-labels, FMS
clocks, the half-filled stream batch, adaptive-LR history and the random generators. It loads
with ``torch.load(..., weights_only=True)``, so a checkpoint file can never run code.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from hle_stream.config import LearnerConfig
from hle_stream.hierarchy import LabelTree
from hle_stream.learner import HierarchicalLearner
from hle_stream.model import grow_head
from hle_stream.tree_tables import TreeTables

FORMAT_VERSION = 1
MEMORY_FIELDS = ("x", "targets", "pseudo", "pseudo_bins", "level", "bin", "importance", "last_loss", "fresh", "sample_id")


class IncompatibleStateError(ValueError):
    """A saved state written by a format this version cannot read."""


def learner_state(learner: HierarchicalLearner) -> dict[str, Any]:
    mem = learner.memory
    pending = learner._pending
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": asdict(learner.config),
        "input_shape": list(learner.input_shape),
        "input_dtype": str(mem.x.dtype).removeprefix("torch."),
        "tree": learner.tree.state_dict(),
        "head_sizes": learner.net.head_sizes(),
        "net": learner.net.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "memory": {name: getattr(mem, name)[: mem.size].cpu() for name in MEMORY_FIELDS},
        "first_seen": list(learner.first_seen),
        "counters": {"seen": learner.seen, "offered": learner.offered, "steps": learner.steps, "updates": learner._updates,
                     "nonfinite_steps": learner.nonfinite_steps, "quarantined": learner.quarantined},
        "pending": {
            "x": torch.stack([torch.as_tensor(p[0]) for p in pending]) if pending else None,
            "targets": torch.stack([p[1] for p in pending]) if pending else None,
            "meta": [[p[2], p[3], p[4]] for p in pending],
        },
        "generator": learner.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if learner.importance is not None:
        tracker = learner.importance
        state["importance"] = {"uses": tracker.uses.cpu(), "steps": tracker.steps_since_update, "probe": tracker.probe}
    if learner.adaptive_lr is not None:
        lr = learner.adaptive_lr
        state["adaptive_lr"] = {"high": lr.high, "using_low": lr.using_low, "current": list(lr._current),
                                "low_history": list(lr._history[True]), "high_history": list(lr._history[False])}
    return state


def restore_learner(state: dict[str, Any], device: str | None = None) -> HierarchicalLearner:
    """A learner that continues exactly where the saved one stopped (``device`` may override)."""
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise IncompatibleStateError(f"learner state format {version} is not supported (this version reads {FORMAT_VERSION})")
    config = LearnerConfig(**state["config"])
    if device is not None:
        config = config.with_(device=device)
    learner = HierarchicalLearner(config, state["input_shape"], getattr(torch, state["input_dtype"]))
    learner.tree = LabelTree.from_state_dict(state["tree"])
    learner.tables = TreeTables(learner.tree, learner.device)
    for level, size in enumerate(state["head_sizes"], start=1):
        grow_head(learner.net, learner.optimizer, level, size)
    learner.net.load_state_dict(state["net"])
    learner.optimizer.load_state_dict(_one_param_group(state["optimizer"]))
    mem = learner.memory
    mem.size = len(state["memory"]["level"])
    for name in MEMORY_FIELDS:
        getattr(mem, name)[: mem.size] = state["memory"][name].to(learner.device)
    learner.first_seen = list(state["first_seen"])
    counters = state["counters"]
    learner.seen, learner.offered, learner.steps, learner._updates = (
        counters["seen"], counters["offered"], counters["steps"], counters["updates"])
    learner.nonfinite_steps = counters.get("nonfinite_steps", 0)  # absent before the numerical guard
    learner.quarantined = counters.get("quarantined", 0)
    pending = state["pending"]
    learner._pending = [(pending["x"][i], pending["targets"][i], *meta) for i, meta in enumerate(pending["meta"])]
    if learner.importance is not None:
        learner.importance.uses.copy_(state["importance"]["uses"])
        learner.importance.steps_since_update = state["importance"]["steps"]
        learner.importance.probe = state["importance"].get("probe", torch.empty(0, dtype=torch.long))
    if learner.adaptive_lr is not None:
        saved, lr = state["adaptive_lr"], learner.adaptive_lr
        lr.high, lr.using_low, lr._current = saved["high"], saved["using_low"], list(saved["current"])
        lr._history = {True: list(saved["low_history"]), False: list(saved["high_history"])}
        lr._apply()
    learner.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return learner


def _one_param_group(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """States saved when each head had its own parameter group, merged into the one group heads
    now join (same parameter order: backbone, then the heads by level); the learning rates of
    all groups were always equal."""
    groups = optimizer_state["param_groups"]
    if len(groups) == 1:
        return optimizer_state
    merged = {**groups[0], "params": [index for group in groups for index in group["params"]]}
    return {**optimizer_state, "param_groups": [merged]}

