"""Which records of a micro-batch the model sees. Each record is parsed against the event contract
and, its text encoded if it carries text, fitted to the model's input (its kind, shape and dtype,
fixed by the first usable event); then, over the
batch, the labelled events are checked against the class cap (as if the earlier ones were learned)
and an event whose id is among the recent ones is refused as a duplicate. Every refusal is a dead
letter with its reason; the micro-batch step (``hle_stream.service.processing``) sends them.
"""

from __future__ import annotations

import torch

from connectors.ports import Record
from hle_stream.contract import (
    Event,
    EventError,
    LabelEvent,
    feature_dtype,
    parse_event,
    require_dtype,
    require_kind,
    require_shape,
)
from hle_stream.core.hierarchy import LabelTree
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.dedupe import RecentIds

Refusal = tuple[Record, str, str]
"""A record refused, its dead-letter reason and the detail."""


class Admission:
    """Owns the window of recent ids (part of the checkpoint) and the label tree that checks labels
    before a learner exists."""

    def __init__(self, config: ProcessingConfig) -> None:
        self.config = config
        self.recent_ids = RecentIds(config.dedupe_window)
        self.no_classes_yet = LabelTree(config.learner_config.max_depth, config.learner_config.max_classes)

    def decode(self, record: Record, learner: HierarchicalLearner | None, labels_alone: bool) -> Event | LabelEvent:
        """The record as an event of the contract, its features checked against the model's input
        when one is known (a text event's are checked by ``fit`` once encoded); raises
        ``EventError``. ``labels_alone``: a label without features is a label event."""
        cfg = self.config
        return parse_event(record.value, learner.input_spec.shape if learner else cfg.input_shape,
                           learner.tree if learner else self.no_classes_yet, cfg.max_message_bytes,
                           cfg.max_abs_feature, labels_alone=labels_alone, max_text_chars=cfg.max_text_chars)

    def fit(self, event: Event, batch: list[Event], learner: HierarchicalLearner | None,
            learner_reads_text: bool) -> None:
        """Raises ``EventError`` unless ``event`` (its text encoded) fits the model and the events
        admitted before it in ``batch``: its kind (text or features: a model takes one for good),
        shape and dtype."""
        reads_text = learner_reads_text if learner is not None else (batch[0].text is not None if batch else None)
        if reads_text is not None:
            require_kind(event, reads_text)
        expected_shape = learner.input_spec.shape if learner else self.config.input_shape
        if expected_shape is not None:
            require_shape(event, expected_shape)
        if batch and event.x.shape != batch[0].x.shape:
            raise EventError("wrong_shape", f"shape {event.x.shape} differs from {batch[0].x.shape} in the batch")
        expected = self._expected_dtype(batch, learner)
        if expected is not None:
            require_dtype(event, expected)

    def _expected_dtype(self, batch: list[Event], learner: HierarchicalLearner | None) -> torch.dtype | None:
        if learner is not None:
            return learner.input_spec.dtype
        if self.config.input_dtype is not None:
            return getattr(torch, self.config.input_dtype)
        return feature_dtype(batch[0]) if batch else None

    def screen(self, events: list[Event], sources: list[Record],
               tree: LabelTree) -> tuple[list[Event], list[Record], list[Refusal]]:
        """The batch's events within the class cap, then those whose id is not a recent one; the
        refused in that order (before anything is predicted)."""
        labelled = [i for i, e in enumerate(events) if e.label]
        over_cap = {labelled[j] for j in tree.over_cap([events[i].label for i in labelled])}
        refused = [(sources[i], "bad_label", f"{events[i].label}: would exceed the cap of {tree.max_classes} classes")
                   for i in sorted(over_cap)]
        kept_events, kept_sources = [], []
        for i, (event, record) in enumerate(zip(events, sources)):
            if i in over_cap:
                continue
            if self.recent_ids.admit(event.id):
                kept_events.append(event)
                kept_sources.append(record)
            else:
                refused.append((record, "duplicate_id", f"id {event.id!r} is among the last "
                                                        f"{self.recent_ids.capacity} ids with features"))
        return kept_events, kept_sources, refused
