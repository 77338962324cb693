"""One micro-batch of raw records through the model, without I/O: what the daemon does between
a poll and a checkpoint, testable without Kafka.

Every record ends in exactly one of three places, whatever its bytes: a prediction (and, if it
carries a label, a training example), a dead letter with a reason from
``hle_stream.contract.DEAD_LETTER_REASONS``, or, for a label event (an id and a label
without features), one outcome of its join with the features seen earlier
(``label_outcomes``: joined, refined, upgraded in memory, or ignored as a duplicate or conflict;
one that finds no features is a dead letter). Nothing raises out of ``process``: a record that trips
an unexpected error in hle-stream itself is dead-lettered as ``internal_error`` with its
traceback logged, so one record can neither stop the daemon nor, since its offset is passed,
crash-loop it on restart. (The one case of two outcomes: a labelled event predicted, then not
learned because learning failed, also gets an ``internal_error`` dead letter saying so.)

Its parts: ``admission`` (which records become events: parsing, the model's input, the class cap,
duplicate ids), ``text_features`` (the encoder that turns a batch's text events into features), ``scoring`` (what was served, judged against the labels: prequential accuracy,
served paths, the calibrated threshold, drift), the join store of features waiting for label
events (``join_store``); this module predicts, answers, joins labels and learns, recording the
lineage of what was learned.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict
from typing import Any, Iterable

import numpy as np
import torch

from connectors.ports import Record, Sink
from hle_stream.contract import Event, EventError, LabelEvent, feature_dtype, prediction_document
from hle_stream.core.config import LearnerConfig
from hle_stream.core.device import pick_device
from hle_stream.core.hierarchy import LabelPathError, LabelTree
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import canonical
from hle_stream.core.predictor import prediction_paths
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.service.admission import Admission
from hle_stream.service.background_import import BackgroundImport
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.drift import DriftMonitor
from hle_stream.service.join_store import JoinStore, Pending
from hle_stream.service.lineage import TrainedIdLog
from hle_stream.service.scoring import Scoring
from hle_stream.service.telemetry import NO_TELEMETRY, NoTelemetry, Telemetry
from hle_stream.service.text_features import TextFeatures

log = logging.getLogger(__name__)

class MicroBatchProcessor:
    """Predict every record of a micro-batch, then learn from the labelled ones (test-then-train).

    Owns the learner (created from the first usable event), its parts (admission, scoring, the
    join store) and the next offset of every partition it has processed. Its output (a
    prediction per event, dead letters) goes to the sink each ``process`` call is given: the
    daemon restores a processor before it connects its sink.
    """

    def __init__(self, config: ProcessingConfig, telemetry: Telemetry | NoTelemetry = NO_TELEMETRY,
                 drift: DriftMonitor | None = None, lineage: TrainedIdLog | None = None) -> None:
        self.config = config
        self.telemetry = telemetry
        self.drift = drift  # handed to each new Scoring
        self.lineage = lineage
        self.texts = TextFeatures(config.encoder_choice(), pick_device(config.learner_config.device).type, telemetry)
        # A learner's optimizer imports torch._dynamo when made (1-2 s): load it while the
        # daemon connects and joins its group, not when the first event is waiting.
        self._optimizer_import = BackgroundImport("torch._dynamo")
        self.reset()
        self.consumed = 0
        self.dead_letters = 0
        self.label_outcomes: Counter[str] = Counter()  # label events by outcome (telemetry's JOIN_OUTCOMES)

    def reset(self) -> None:
        """Forget the model and everything tied to it (a trainer taking over with no checkpoint in
        the store starts a new lineage); the counters of this process stay."""
        self.learner: HierarchicalLearner | None = None
        self.encoder_identity: dict[str, Any] | None = None  # the learner's encoder, when it learns from text
        self.scoring = Scoring(self.config, self.drift, self.telemetry)
        self.admission = Admission(self.config)
        self.next_offsets: dict[int, int] = {}
        self.model_id = uuid.uuid4().hex  # names this model's lineage (the checkpointer's record of its commits)
        self.version_base = 0  # added to the train steps: see model_version
        cfg = self.config
        self.joins = JoinStore(cfg.join_window, cfg.join_max_age_seconds) if cfg.join_window else None

    @property
    def tree(self) -> LabelTree:
        return self.learner.tree if self.learner else self.admission.no_classes_yet

    @property
    def confidence_threshold(self) -> float:
        return self.scoring.confidence_threshold

    @property
    def model_version(self) -> int:
        """The ``model_version`` predictions and snapshots carry: the train steps, plus a base that
        a trainer raises when it restores a checkpoint older than a snapshot already published
        (``continue_versions_above``), so a version never names two models and never goes back."""
        return (self.learner.steps if self.learner else 0) + self.version_base

    def continue_versions_above(self, published: int) -> bool:
        """Raise the base so the next version is above ``published``; False when it already is."""
        if self.model_version > published:
            return False
        self.version_base += published + 1 - self.model_version
        return True

    @property
    def prequential(self) -> PrequentialAccuracy:
        return self.scoring.prequential

    def process(self, records: Iterable[Record], out: Sink, train: bool = True) -> None:
        """``train=False`` (the daemon's compute budget): the labelled events are predicted and
        remembered, but no gradient step is taken for them."""
        decoded = self._encode_texts([(record, self._decode(record)) for record in records])
        events, sources, label_events = [], [], []
        for record, item in decoded:
            try:
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, LabelEvent):
                    label_events.append((item, record))
                    continue
                self._admit(item, events)
                events.append(item)
                sources.append(record)
            except EventError as err:
                self._dead_letter(out, record, err.reason, str(err))
            except Exception as err:  # a bug of ours must not stop the stream: logged, dead-lettered
                log.error("internal error on %s[%d]@%d", record.topic, record.partition, record.offset, exc_info=err)
                self._dead_letter(out, record, "internal_error", f"{type(err).__name__}: {err}")
        events, sources, refused = self.admission.screen(events, sources, self.tree)
        for record, reason, detail in refused:
            self._dead_letter(out, record, reason, detail)
        if events:
            self._features_batch(out, events, sources, train)
        if label_events:  # after the batch's features: a label may follow its event closely
            self._join_labels(out, label_events, train)
        if self.joins is not None:
            self.telemetry.record_join_store(len(self.joins), self.joins.nbytes)

    def _decode(self, record: Record) -> Event | LabelEvent | Exception:
        """The record against the contract; the error it raised, to be dead-lettered in order."""
        self.consumed += 1
        self.next_offsets[record.partition] = record.offset + 1
        try:
            return self.admission.decode(record, self.learner, labels_alone=self.joins is not None)
        except Exception as err:
            return err

    def _encode_texts(self, decoded: list[tuple[Record, Any]]) -> list[tuple[Record, Any]]:
        """The batch's text events with their features, from one encoder call (the encoder is
        the costly part of a text event); if it fails, each of them carries the error."""
        texts = [i for i, (_, item) in enumerate(decoded) if isinstance(item, Event) and item.text is not None]
        if not texts:
            return decoded
        try:
            encoded: list[Any] = self.texts.encode([decoded[i][1] for i in texts])
        except Exception as err:
            encoded = [err] * len(texts)
        for i, item in zip(texts, encoded):
            decoded[i] = (decoded[i][0], item)
        return decoded

    def _features_batch(self, out: Sink, events: list[Event], sources: list[Record], train: bool) -> None:
        try:
            x = torch.from_numpy(np.stack([e.x for e in events]))
        except Exception as err:
            log.exception("internal error stacking a batch of %d events", len(events))
            for record in sources:
                self._dead_letter(out, record, "internal_error", f"prediction failed: {type(err).__name__}: {err}")
            return
        self._predict_then_learn(out, events, sources, x, train)

    def _admit(self, event: Event, batch: list[Event]) -> None:
        """Raises ``EventError`` unless the event fits the model and ``batch``
        (``hle_stream.service.admission``); the first usable one creates the learner."""
        self.admission.fit(event, batch, self.learner, self.encoder_identity is not None)
        if self.learner is None and not batch:
            self._create_learner(event)

    def _create_learner(self, event: Event) -> None:
        """The first usable event fixes the input; a shape the backbone cannot take (an image
        too small for its pooling, say) is refused here rather than fixed for good."""
        shape, dtype = event.x.shape, feature_dtype(event)
        self._optimizer_import.module()
        learner = HierarchicalLearner(self.config.resolved_learner_config(), shape, dtype)
        try:
            learner.check_input(torch.from_numpy(event.x[None]))
        except ValueError as err:
            raise EventError("wrong_shape", str(err)) from None
        self.learner = learner
        self.encoder_identity = self.texts.identity if event.text is not None else None
        log.info("learner created for inputs of shape %s (%s%s), method %s", shape, dtype,
                 f", text through {self.encoder_identity['encoder']}" if self.encoder_identity else "",
                 self.config.method)

    # -- test, then train ------------------------------------------------------------------
    def _predict_then_learn(self, out: Sink, events: list[Event], sources: list[Record], x: torch.Tensor, train: bool) -> None:
        """The learner's prequential step; a failure before the answers are out dead-letters the
        batch, a failure of learning only the labelled events (their answers stand)."""
        labels = [e.label or None for e in events]
        labelled = [i for i, label in enumerate(labels) if label]
        clock = {"started": time.perf_counter()}

        def answer(probabilities: list[torch.Tensor]) -> None:
            self._answer(out, events, sources, probabilities, time.perf_counter() - clock["started"])
            clock["answered"] = time.perf_counter()

        learned = labelled
        first_sample_id = self.learner.seen  # the k-th event learned gets this + k in the replay memory
        try:
            self.learner.predict_then_learn(x, labels, on_predicted=answer, train=train)
        except LabelPathError:  # nothing learned (the batch is checked first), e.g. the class cap reached inside it
            learned = [i for i in labelled if self._learn_one(out, x[i:i + 1], events[i].label, sources[i], train)]
        except Exception as err:
            stage = "learning" if "answered" in clock else "prediction"
            log.exception("internal error in %s of a batch of %d events", stage, len(events))
            doomed = labelled if stage == "learning" else range(len(events))
            for i in doomed:
                self._dead_letter(out, sources[i], "internal_error", f"{stage} failed: {type(err).__name__}: {err}")
            if stage == "prediction":
                return
            learned = []
        if self.lineage is not None:
            self.lineage.record(events[i].id for i in learned)
        if self.joins is not None:
            for k, i in enumerate(learned):
                pending = self.joins.entries.get(events[i].id)
                if pending is not None:
                    pending.label, pending.sample_id = events[i].label, first_sample_id + k
        if labelled:
            self._record_learning(len(learned), train, time.perf_counter() - clock.get("answered", clock["started"]))

    def _record_learning(self, count: int, train: bool, seconds: float) -> None:
        if train:
            self.telemetry.record_training(count, seconds)
        else:
            self.telemetry.record_remembered_only(count)

    # -- label events: joined with the features they name (hle_stream.service.join_store) -------------
    def _join_labels(self, out: Sink, items: list[tuple[LabelEvent, Record]], train: bool) -> None:
        """Score each label against the prediction served when its features arrived, then learn:
        a first label trains on the stored features; a finer one (``a`` then ``a/b``) upgrades the
        sample in the replay memory, or trains on it again when the memory no longer holds it;
        the same label again, or one that contradicts or coarsens the earlier one, is ignored and
        counted (the first label stands)."""
        now = time.time()
        to_learn: list[tuple[LabelEvent, Record, Pending]] = []
        for event, record in items:
            pending = self.joins.get(event.id, now)
            if pending is None:
                expired = self.joins.was_expired(event.id)
                self._join_outcome("expired" if expired else "unknown")
                self._dead_letter(out, record, "label_expired" if expired else "label_unknown_id",
                                  f"no features for id {event.id!r} in the join store (the last "
                                  f"{self.joins.max_entries} events, {self.joins.max_age_s:g} s)"
                                  if expired else f"no event with id {event.id!r} was seen")
                continue
            if any(waiting is pending for _, _, waiting in to_learn):  # its earlier label is in this batch too
                self._learn_joined(out, to_learn, train)
                to_learn = []
            earlier = pending.label
            if earlier is not None and not event.label.startswith(earlier + "/"):
                outcome = "duplicate" if event.label == earlier else "conflict"
                self._join_outcome(outcome)
                if outcome == "conflict":
                    log.warning("label %r for id %r at %s[%d]@%d contradicts or coarsens %r, which it was trained "
                                "with: ignored", event.label, event.id, record.topic, record.partition, record.offset,
                                earlier)
                continue
            tree = self.learner.tree
            self.scoring.delayed(tree, event.label, record, pending.guesses, pending.confidences,
                                 pending.served_path(tree) if earlier is None else None,
                                 from_level=1 if earlier is None else earlier.count("/") + 2)
            self.telemetry.record_label_delay(now - pending.arrived_at)
            if (earlier is not None and self.config.refinements == "upgrade" and pending.sample_id is not None
                    and self._upgrade(event, pending)):
                continue
            to_learn.append((event, record, pending))
        if to_learn:
            self._learn_joined(out, to_learn, train)

    def _upgrade(self, event: LabelEvent, pending: Pending) -> bool:
        """A finer label for a sample in the replay memory: upgraded in place (True)."""
        try:
            upgraded = self.learner.relabel(pending.sample_id, event.label)
        except LabelPathError:
            return False  # e.g. the class cap: learned (and refused) through the ordinary path
        if upgraded:
            pending.label = event.label
            self._join_outcome("upgraded_in_memory")
            if self.lineage is not None:
                self.lineage.record([f"{event.id}>{event.label}"])
        return upgraded

    def _learn_joined(self, out: Sink, items: list[tuple[LabelEvent, Record, Pending]], train: bool) -> None:
        started = time.perf_counter()
        first_sample_id = self.learner.seen
        x = torch.from_numpy(np.stack([pending.x for _, _, pending in items]))
        try:
            self.learner.observe(x, [event.label for event, _, _ in items], train=train)
            learned = list(range(len(items)))
        except LabelPathError:  # one label passes the class cap only alone: learn them one by one
            learned = [i for i, (event, record, _) in enumerate(items)
                       if self._learn_one(out, x[i:i + 1], event.label, record, train)]
        for k, i in enumerate(learned):
            event, _, pending = items[i]
            refined = pending.label is not None
            pending.label, pending.sample_id = event.label, first_sample_id + k
            self._join_outcome("refined" if refined else "joined")
            if self.lineage is not None:
                self.lineage.record([f"{event.id}>{event.label}" if refined else event.id])
        self._record_learning(len(learned), train, time.perf_counter() - started)

    def _join_outcome(self, outcome: str) -> None:
        self.label_outcomes[outcome] += 1
        self.telemetry.record_join(outcome)

    def _learn_one(self, out: Sink, x: torch.Tensor, label: str, record: Record, train: bool) -> bool:
        try:
            self.learner.observe(x, [label], train=train)
            return True
        except LabelPathError as err:
            self._dead_letter(out, record, "bad_label", str(err))
            return False

    def _answer(self, out: Sink, events: list[Event], sources: list[Record], probabilities: list[torch.Tensor],
                seconds: float) -> None:
        """Every document is built before any is sent, so a failure leaves no record half-answered."""
        learner = self.learner
        paths = prediction_paths(learner.tree, probabilities, len(events), self.confidence_threshold)
        documents = [prediction_document(event.id, self.model_version, path, event.label)
                     for event, path in zip(events, paths)]
        self.telemetry.record_prediction("stream", len(events), seconds)
        best = [p.max(dim=1) for p in probabilities]
        confidences = [values.tolist() for values, _ in best]
        guesses = [indices.tolist() for _, indices in best]
        if self.joins is not None:  # what was served, for the label that may come later
            now = time.time()
            for row, event in enumerate(events):
                served = [learner.tree.locate(step["label"])[1] for step in paths[row]]
                self.joins.add(event.id, Pending(event.x, now, [level[row] for level in guesses], served,
                                                 confidences=[level[row] for level in confidences]), now)
        labelled = [i for i, e in enumerate(events) if e.label]
        if labelled:
            self.scoring.served(learner.tree, [events[i].label for i in labelled], [paths[i] for i in labelled],
                                [[level[i] for level in confidences] for i in labelled],
                                [[level[i] for level in guesses] for i in labelled],
                                [p[labelled] for p in probabilities], [sources[i] for i in labelled])
        for document in documents:
            out.prediction(document)

    def _dead_letter(self, out: Sink, record: Record, reason: str, detail: str) -> None:
        self.dead_letters += 1
        self.telemetry.record_dead_letter(reason)
        log.warning("dead letter: %s at %s[%d]@%d: %s", reason, record.topic, record.partition, record.offset,
                    detail[:500])
        out.dead_letter(record, reason, detail)

    # -- state (part of the daemon's checkpoint) ---------------------------------------------
    def settings_conflicts(self, state: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """What this configuration asks to change of a saved state's learner that a checkpoint
        fixes for good (everything but the device): name -> (saved, requested)."""
        if state.get("learner") is None:
            return {}
        requested = self.config.resolved_learner_config()
        fields = set(asdict(requested))
        saved = asdict(canonical(LearnerConfig(**{k: v for k, v in state["learner"]["config"].items() if k in fields})))
        conflicts = {name: (saved[name], value) for name, value in asdict(canonical(requested)).items()
                     if name != "device" and saved[name] != value}
        learner = state["learner"]  # the input the model takes, when this run names one
        if self.config.input_shape is not None and tuple(learner["input_shape"]) != tuple(self.config.input_shape):
            conflicts["input_shape"] = (",".join(map(str, learner["input_shape"])),
                                        ",".join(map(str, self.config.input_shape)))
        if self.config.input_dtype is not None and learner["input_dtype"] != self.config.input_dtype:
            conflicts["input_dtype"] = (learner["input_dtype"], self.config.input_dtype)
        saved_encoder = state.get("encoder")  # a model that learns from text is bound to its encoder
        if saved_encoder is not None and saved_encoder != self.texts.identity:
            conflicts["encoder"] = (_encoder_text(saved_encoder), _encoder_text(self.texts.identity))
        return conflicts

    def state_dict(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict() if self.learner else None, "method": self.config.method,
                "encoder": self.encoder_identity,
                "model_id": self.model_id, "version_base": self.version_base,
                **self.scoring.state_dict(),
                "offsets": dict(self.next_offsets),
                "recent_ids": self.admission.recent_ids.state_dict(),
                "joins": self.joins.state_dict() if self.joins is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["learner"] is not None:
            self.learner = HierarchicalLearner.from_state_dict(state["learner"],
                                                               device=self.config.learner_config.device)
        self.encoder_identity = state.get("encoder")  # absent before text events: a model of features
        self.scoring.load_state_dict(state)
        self.next_offsets = {int(p): int(o) for p, o in state["offsets"].items()}
        self.model_id = state.get("model_id", self.model_id)  # checkpoints before model ids have none
        self.version_base = int(state.get("version_base", 0))  # absent before monotonic versions
        if "recent_ids" in state:  # checkpoints before the duplicate check have none
            self.admission.recent_ids.load_state_dict(state["recent_ids"])
        if self.joins is not None and state.get("joins") is not None:  # before label events: none
            self.joins.load_state_dict(state["joins"])


def _encoder_text(identity: dict[str, Any]) -> str:
    return f"{identity['encoder']}, {identity['max_tokens']} tokens"
