"""The micro-batch step without Kafka: every record ends as a prediction or a dead letter with
its reason, and no record can stop the step, fix a useless input shape or poison the model."""

import json

import torch

from connectors.memory import ListSink, RawRecord
from hle_stream.core.config import LearnerConfig
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.processing import MicroBatchProcessor

DIM = 8


def _processor(**changes):
    config = ProcessingConfig(learner_config=LearnerConfig(memory_size=32, batch_size=4, device="cpu"), **changes)
    sink = ListSink()
    return MicroBatchProcessor(config), sink


def _records(values, start=0):
    return [RawRecord("t", 0, start + i, v if v is None or isinstance(v, bytes) else json.dumps(v).encode())
            for i, v in enumerate(values)]


def _event(i, label="a/x", scale=1.0):
    return {"id": f"e{i}", "x": [scale * ((i + k) % 5) for k in range(DIM)], "label": label}


def _reasons(sink):
    return [reason for _, reason, _ in sink.dead_letters]


def test_a_first_event_with_empty_features_is_dead_lettered_and_does_not_fix_the_input_shape():
    processor, sink = _processor()
    processor.process(_records([{"id": "empty", "x": []}, {"id": "scalar", "x_b64": "AAAAAA==", "dtype": "float32",
                                                          "shape": []}]), sink)
    assert _reasons(sink) == ["wrong_shape", "wrong_shape"] and processor.learner is None
    processor.process(_records([_event(i) for i in range(8)], start=2), sink)
    assert processor.learner.input_shape == (DIM,) and len(sink.predictions) == 8


def test_an_image_too_small_for_the_backbone_is_refused_instead_of_becoming_the_models_shape():
    processor, sink = _processor()
    tiny = {"id": "tiny", "x_b64": "AAAAAA==", "dtype": "uint8", "shape": [1, 2, 2], "label": "a"}
    processor.process(_records([tiny]), sink)
    assert _reasons(sink) == ["wrong_shape"] and "cannot take" in sink.dead_letters[0][2]
    assert processor.learner is None


def test_finite_but_huge_features_are_refused_and_the_model_stays_finite():
    processor, sink = _processor()
    processor.process(_records([_event(i) for i in range(8)]), sink)
    processor.process(_records([_event(100, scale=1e30), _event(101, scale=2e6)] + [_event(i) for i in range(8, 16)],
                               start=8), sink)
    assert _reasons(sink) == ["out_of_range", "out_of_range"]
    assert all(bool(torch.isfinite(p).all()) for p in processor.learner.net.parameters())
    assert len(sink.predictions) == 16


def test_a_repeated_id_is_dead_lettered_within_a_batch_across_batches_and_after_a_restore():
    processor, sink = _processor(dedupe_window=100)
    processor.process(_records([_event(1), _event(2), _event(1)]), sink)
    processor.process(_records([_event(2)], start=3), sink)
    assert _reasons(sink) == ["duplicate_id", "duplicate_id"]
    restored, restored_sink = _processor(dedupe_window=100)
    restored.load_state_dict(processor.state_dict())
    restored.process(_records([_event(1), _event(3)], start=4), restored_sink)
    assert _reasons(restored_sink) == ["duplicate_id"] and [p["id"] for p in restored_sink.predictions] == ["e3"]


def test_the_duplicate_window_forgets_the_oldest_ids_and_zero_turns_it_off():
    processor, sink = _processor(dedupe_window=2)
    processor.process(_records([_event(1), _event(2), _event(3), _event(1)]), sink)
    assert _reasons(sink) == []
    processor, sink = _processor(dedupe_window=0)
    processor.process(_records([_event(1), _event(1)]), sink)
    assert len(sink.predictions) == 2


def test_a_bug_while_learning_dead_letters_the_batch_as_internal_error_and_the_next_batch_goes_on(monkeypatch):
    processor, sink = _processor()
    processor.process(_records([_event(i) for i in range(4)]), sink)
    monkeypatch.setattr(processor.learner, "observe", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    processor.process(_records([_event(i) for i in range(4, 8)], start=4), sink)
    assert _reasons(sink) == ["internal_error"] * 4 and "boom" in sink.dead_letters[0][2]
    monkeypatch.undo()
    processor.process(_records([_event(i) for i in range(8, 12)], start=8), sink)
    assert len(sink.predictions) == 12 and len(sink.dead_letters) == 4


def test_every_record_of_a_mixed_batch_gets_exactly_one_outcome_and_offsets_advance_past_all_of_them():
    processor, sink = _processor()
    values = [_event(0), None, b"\xff", {"id": "a" * 300, "x": [0.0] * DIM}, {"id": 5, "x": [0.0] * DIM,
              "label": "a/\u202eevil"}, {"id": "nfc", "x": [0.0] * DIM, "label": "cafe\u0301"}]
    processor.process(_records(values), sink)
    assert len(sink.predictions) + len(sink.dead_letters) == len(values)
    assert _reasons(sink) == ["not_json", "not_json", "bad_id", "bad_label"]
    assert sink.predictions[-1]["label"] == "caf\u00e9"  # normalized to NFC
    assert processor.next_offsets == {0: len(values)}
