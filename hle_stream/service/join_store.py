"""The features of recent events, kept by id until their label arrives (delayed and refined labels).

In a real stream the label of an event rarely travels with it: the event is seen and predicted
first, a person or a downstream system labels it later, an expert may refine that label later
still (``hardware`` today, ``hardware/printer`` next week). The daemon keeps, per id, the
features, the prediction made when they arrived (so that accuracy is scored on what was served,
against the label when it comes) and the label it was trained with so far. The store is bounded
by count (``max_entries``; the oldest goes first) and by age (``max_age_s``); ids that left it are
remembered a while longer (``EXPIRED_MEMORY``), so that a late label is told apart from an id
never seen. It is part of the daemon's checkpoint: a restart between an event and its label loses
no join.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hle_stream.core.hierarchy import LabelTree

EXPIRED_MEMORY = 4  # expired ids remembered: this many times max_entries


@dataclass
class Pending:
    """One event waiting for a label, or for a finer one."""

    x: np.ndarray
    arrived_at: float  # wall-clock seconds
    guesses: list[int]  # the predicted class index per level when the features arrived
    served: list[int] = field(default_factory=list)  # the class index per level of the path served then
    label: str | None = None  # the label it was trained with so far
    sample_id: int | None = None  # its id in the learner's memory, once trained
    confidences: list[float] = field(default_factory=list)  # the best class's probability per level

    def served_path(self, tree: LabelTree) -> list[str]:
        return [tree.path_of(level, index) for level, index in enumerate(self.served, start=1)]

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + 8 * (len(self.guesses) + len(self.served) + len(self.confidences)) + 64


class JoinStore:
    def __init__(self, max_entries: int = 10_000, max_age_s: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.entries: OrderedDict[str, Pending] = OrderedDict()
        self.expired: OrderedDict[str, None] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, event_id: str, pending: Pending, now: float) -> None:
        if event_id in self.entries:
            self.nbytes -= self.entries.pop(event_id).nbytes
        self.entries[event_id] = pending
        self.nbytes += pending.nbytes
        self.expire(now)

    def get(self, event_id: str, now: float) -> Pending | None:
        self.expire(now)
        return self.entries.get(event_id)

    def was_expired(self, event_id: str) -> bool:
        return event_id in self.expired

    def expire(self, now: float) -> int:
        """Drop the entries past the count or the age limit, oldest first; returns how many."""
        dropped = 0
        while self.entries:
            oldest_id, oldest = next(iter(self.entries.items()))
            if len(self.entries) <= self.max_entries and now - oldest.arrived_at <= self.max_age_s:
                break
            self.entries.popitem(last=False)
            self.nbytes -= oldest.nbytes
            self.expired[oldest_id] = None
            dropped += 1
        while len(self.expired) > EXPIRED_MEMORY * self.max_entries:
            self.expired.popitem(last=False)
        return dropped

    # -- state (part of the daemon's checkpoint: tensors and plain data only) ---------------------
    def state_dict(self) -> dict[str, Any]:
        return {"ids": list(self.entries), "x": [torch.from_numpy(p.x.copy()) for p in self.entries.values()],
                "arrived_at": [p.arrived_at for p in self.entries.values()],
                "guesses": [list(p.guesses) for p in self.entries.values()],
                "served": [list(p.served) for p in self.entries.values()],
                "labels": [p.label for p in self.entries.values()],
                "sample_ids": [p.sample_id for p in self.entries.values()],
                "confidences": [list(p.confidences) for p in self.entries.values()], "expired": list(self.expired)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries.clear()
        self.nbytes = 0
        # before tree-consistent paths: each level's best class, down to the served depth
        served = state.get("served") or [g[:depth] for g, depth in
                                          zip(state["guesses"], state.get("served_depths", map(len, state["guesses"])))]
        confidences = state.get("confidences", [[] for _ in state["ids"]])  # absent before threshold calibration
        for event_id, x, arrived_at, guesses, path, label, sample_id, confidence in zip(
                state["ids"], state["x"], state["arrived_at"], state["guesses"], served, state["labels"],
                state["sample_ids"], confidences):
            pending = Pending(x.numpy(), float(arrived_at), [int(g) for g in guesses], [int(i) for i in path], label,
                              sample_id, [float(c) for c in confidence])
            self.entries[event_id] = pending
            self.nbytes += pending.nbytes
        self.expired = OrderedDict((event_id, None) for event_id in state["expired"])
