"""Labels that arrive after their event, and finer labels for the same event: label events joined by
id in the micro-batch step (no broker), their checkpoint, and the producer simulation's order."""

from __future__ import annotations

import json

from connectors.memory import ListSink, RawRecord
from hle_stream.core.config import LearnerConfig
from hle_stream.eval.producer_sim import with_delayed_labels
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.processing import MicroBatchProcessor

DIM = 6


def _processor(**changes) -> tuple[MicroBatchProcessor, ListSink]:
    sink = ListSink()
    config = ProcessingConfig(learner_config=LearnerConfig(memory_size=32, batch_size=4, device="cpu"), **changes)
    return MicroBatchProcessor(config), sink


class Stream:
    """Records with increasing offsets."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, *documents: dict) -> list[RawRecord]:
        records = [RawRecord("t", 0, self.offset + i, json.dumps(d).encode()) for i, d in enumerate(documents)]
        self.offset += len(documents)
        return records


def _features(i: int, label: str | None = None) -> dict:
    event = {"id": f"e{i}", "x": [float((i * 3 + k) % 7) for k in range(DIM)]}
    return {**event, "label": label} if label else event


def _scored(processor: MicroBatchProcessor) -> dict[int, int]:
    return {level: scored for level, (_, scored) in processor.prequential.total.items()}


def test_a_label_that_comes_later_is_scored_on_the_prediction_made_then_and_trains_on_the_stored_features():
    processor, sink = _processor()
    stream = Stream()
    processor.process(stream(*[_features(i, "a/x" if i % 2 else "b/y") for i in range(8)]), sink)
    processor.process(stream(_features(100)), sink)  # unlabelled: predicted, its features kept
    assert [d["id"] for d in sink.predictions][-1] == "e100"
    served = list(processor.joins.entries["e100"].guesses)
    seen, scored = processor.learner.seen, _scored(processor)
    processor.process(stream(*[_features(200 + i, "a") for i in range(8)]), sink)  # the model moves on meanwhile
    calibration = list(processor.scoring.served_threshold.values)
    confidences = processor.joins.entries["e100"].confidences
    processor.process(stream({"id": "e100", "label": "b/y"}), sink)
    # the threshold's calibration judges the path served then, both levels, by its probabilities then
    assert list(processor.scoring.served_threshold.values) == calibration + [confidences[0], min(confidences)]
    assert processor.label_outcomes["joined"] == 1 and sink.dead_letters == []
    assert processor.learner.seen == seen + 8 + 1  # trained on the stored features
    assert _scored(processor) == {1: scored[1] + 8 + 1, 2: scored[2] + 1}
    assert processor.joins.entries["e100"].label == "b/y" and processor.joins.entries["e100"].guesses == served


def test_a_label_for_an_unknown_or_expired_id_is_dead_lettered_with_the_reason():
    processor, sink = _processor(join_window=3)
    stream = Stream()
    processor.process(stream(*[_features(i) for i in range(5)]), sink)  # e0, e1 leave the window of 3
    processor.process(stream({"id": "e0", "label": "a"}, {"id": "nobody", "label": "a"}, {"id": "e4", "label": "a"}), sink)
    assert [reason for _, reason, _ in sink.dead_letters] == ["label_expired", "label_unknown_id"]
    assert processor.label_outcomes == {"expired": 1, "unknown": 1, "joined": 1}


def test_a_finer_label_relearns_the_sample_keeps_its_coarse_copy_and_scores_only_the_new_level():
    processor, sink = _processor()
    stream = Stream()
    processor.process(stream(*[_features(i, "a" if i % 2 else "b") for i in range(6)]), sink)
    memory = processor.learner.memory
    slot = memory.slot_of(processor.joins.entries["e1"].sample_id)
    assert slot is not None and int(memory.level[slot]) == 1
    seen, scored = processor.learner.seen, _scored(processor)
    processor.process(stream({"id": "e1", "label": "a/x"}), sink)
    assert processor.label_outcomes["refined"] == 1 and processor.learner.seen == seen + 1
    assert int(memory.level[slot]) == 1 and int(memory.bin[slot]) == processor.learner.tree.global_id("a")
    assert int(memory.level[memory.slot_of(processor.joins.entries["e1"].sample_id)]) == 2  # the fine copy
    assert _scored(processor) == {1: scored[1], 2: 1}  # level 1 was scored when the features came


def test_with_upgrades_a_finer_label_changes_the_memory_copy_in_place_which_still_teaches_the_coarse_level():
    processor, sink = _processor(refinements="upgrade")
    stream = Stream()
    processor.process(stream(*[_features(i, "a" if i % 2 else "b") for i in range(6)]), sink)
    memory = processor.learner.memory
    slot = memory.slot_of(processor.joins.entries["e1"].sample_id)
    seen, scored = processor.learner.seen, _scored(processor)
    processor.process(stream({"id": "e1", "label": "a/x"}), sink)
    assert processor.label_outcomes["upgraded_in_memory"] == 1 and processor.learner.seen == seen
    assert int(memory.level[slot]) == 2 and int(memory.bin[slot]) == processor.learner.tree.global_id("a/x")
    assert int(memory.first_level[slot]) == 1  # supervised at levels 1 and 2 from now on
    assert _scored(processor) == {1: scored[1], 2: 1}


def test_a_label_that_contradicts_coarsens_or_repeats_the_earlier_one_is_ignored_and_counted():
    processor, sink = _processor()
    stream = Stream()
    processor.process(stream(*[_features(i, "a/x") for i in range(4)]), sink)
    seen = processor.learner.seen
    processor.process(stream({"id": "e0", "label": "b/y"}, {"id": "e1", "label": "a"}, {"id": "e2", "label": "a/x"}), sink)
    assert processor.label_outcomes == {"conflict": 2, "duplicate": 1}
    assert processor.learner.seen == seen and processor.joins.entries["e0"].label == "a/x"
    assert sink.dead_letters == []


def test_a_label_and_its_refinement_in_one_batch_are_learned_in_order():
    processor, sink = _processor()
    stream = Stream()
    processor.process(stream(*[_features(i, "b/y") for i in range(4)] + [_features(7)]), sink)
    processor.process(stream({"id": "e7", "label": "a"}, {"id": "e7", "label": "a/x"}), sink)
    assert processor.label_outcomes["joined"] == 1
    assert processor.label_outcomes["refined"] + processor.label_outcomes["upgraded_in_memory"] == 1
    assert processor.joins.entries["e7"].label == "a/x"


def test_without_a_join_window_a_label_alone_lacks_its_features():
    processor, sink = _processor(join_window=0)
    processor.process(Stream()({"id": "e0", "label": "a"}), sink)
    assert [reason for _, reason, _ in sink.dead_letters] == ["missing_field"]


def test_the_join_store_survives_a_checkpoint():
    first, first_sink = _processor()
    stream = Stream()
    first.process(stream(*[_features(i, "a/x") for i in range(4)] + [_features(9)]), first_sink)
    first.process(stream(_features(10)), first_sink)  # predicted by a model with classes: probabilities to keep
    second, sink = _processor()
    second.load_state_dict(first.state_dict())
    assert second.joins.entries["e10"].confidences == first.joins.entries["e10"].confidences != []
    second.process(stream({"id": "e9", "label": "a/x"}), sink)
    assert second.label_outcomes == {"joined": 1} and sink.dead_letters == []


def test_the_producer_sends_each_label_later_and_in_refinement_mode_the_coarse_one_first():
    events = [{"id": str(i), "x": [0.0], "label": "a/b" if i % 2 else "c"} for i in range(6)]
    delayed = list(with_delayed_labels(events, delay=2))
    assert [e["id"] + ("+" if "x" in e else "") for e in delayed] == \
        ["0+", "1+", "0", "2+", "1", "3+", "2", "4+", "3", "5+", "4", "5"]
    assert all("label" not in e for e in delayed if "x" in e)
    refined = list(with_delayed_labels(events, delay=2, refine=True))
    assert [(e["id"], e["label"], "x" in e) for e in refined if e["id"] == "1"] == [("1", "a", True), ("1", "a/b", False)]
    assert [(e["id"], e["label"]) for e in refined if e["id"] == "2"] == [("2", "c")]  # one level: nothing to refine


# -- through the local broker, as a user runs the daemon -------------------------------------------
