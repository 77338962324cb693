import base64
import json

import numpy as np
import pytest

from hle_stream.contract import EventError, encode_features, parse_event
from hle_stream.core.hierarchy import LabelTree


def _raw(**doc) -> bytes:
    return json.dumps(doc).encode()


def test_a_labelled_vector_event_parses():
    event = parse_event(_raw(id="e1", ts=1.5, x=[1, 2.5, 3], label="clothes/tops"), expected_shape=(3,))
    assert (event.id, event.ts, event.label) == ("e1", 1.5, "clothes/tops")
    assert event.x.dtype == np.float32 and event.x.tolist() == [1.0, 2.5, 3.0]


def test_compact_images_round_trip_through_base64():
    image = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    event = parse_event(_raw(id=7, **encode_features(image)), expected_shape=(2, 3, 4))
    assert event.id == "7" and event.label is None
    assert np.array_equal(event.x, image) and event.x.dtype == np.uint8


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe not json", "not_json"),
    (b"{\"id\": 1, ", "not_json"),
    (b"[1, 2]", "not_object"),
    (_raw(x=[1, 2, 3]), "missing_field"),
    (_raw(id=1), "missing_field"),
    (_raw(id=[1], x=[1, 2, 3]), "wrong_type"),
    (_raw(id=1, ts="noon", x=[1, 2, 3]), "wrong_type"),
    (_raw(id=1, x=[1, "2", 3]), "wrong_type"),
    (_raw(id=1, x=[1, 2]), "wrong_shape"),
    (b'{"id": 1, "x": [1, NaN, 3]}', "non_finite"),
    (b'{"id": 1, "x": [1, Infinity, 3]}', "non_finite"),
    (_raw(id=1, x=[1, 2, 3], label="a//b"), "bad_label"),
    (_raw(id=1, x=[1, 2, 3], label=5), "wrong_type"),
    (_raw(id=1, x_b64="!!", dtype="float32", shape=[3]), "bad_encoding"),
    (_raw(id=1, x_b64=base64.b64encode(b"\0" * 8).decode(), dtype="float32", shape=[3]), "wrong_shape"),
    (_raw(id=1, x_b64="AAAA", dtype="int64", shape=[3]), "wrong_type"),
    (b"{" + b" " * 100 + b"}", "too_large"),
])
def test_bad_events_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(EventError) as err:
        parse_event(raw, expected_shape=(3,), max_bytes=96)
    assert err.value.reason == reason


def test_labels_are_checked_against_the_trees_limits_without_growing_it():
    tree = LabelTree(max_depth=2, max_classes=2)
    tree.add("a")
    with pytest.raises(EventError, match="too_deep"):
        parse_event(_raw(id=1, x=[0.0], label="a/b/c"), tree=tree)
    with pytest.raises(EventError, match="class_cap"):
        parse_event(_raw(id=1, x=[0.0], label="b/c"), tree=tree)
    assert parse_event(_raw(id=1, x=[0.0], label="a/b"), tree=tree).label == "a/b"
    assert tree.total_classes == 1


