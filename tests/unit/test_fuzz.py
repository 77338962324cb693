"""Parsing is total: whatever the bytes, an event or an ``EventError`` with a documented reason,
never another exception; and an accepted label is clean (NFC, no invisible or control character)."""

import json
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hle_stream.contract import EventError, parse_event
from hle_stream.core.hierarchy import LabelTree

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(), st.integers(), json_values),
    "x": st.one_of(st.lists(st.one_of(st.floats(), st.integers()), max_size=10), json_values),
    "x_b64": st.one_of(st.text(), st.binary(max_size=40).map(lambda b: __import__("base64").b64encode(b).decode())),
    "dtype": st.one_of(st.sampled_from(["uint8", "float32", "int64"]), json_values),
    "shape": st.one_of(st.lists(st.integers(min_value=-2, max_value=2**40), max_size=5), json_values),
    "label": st.one_of(st.text(), st.lists(st.text(max_size=6), min_size=1, max_size=10).map("/".join), json_values),
    "ts": json_values,
})


def _total(raw, tree=None):
    try:
        event = parse_event(raw, expected_shape=None, tree=tree, max_bytes=4096)
    except EventError as err:
        assert err.reason in EventError.REASONS
        return None
    json.dumps({"id": event.id, "label": event.label}, ensure_ascii=False).encode("utf-8")  # always encodable
    return event


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.none())
def test_any_bytes_parse_to_an_event_or_an_event_error(raw):
    _total(raw)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields)
def test_any_json_object_of_the_contracts_fields_parses_to_an_event_or_an_event_error(document):
    _total(json.dumps(document).encode(), LabelTree(max_depth=4, max_classes=50))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_an_accepted_label_is_nfc_with_no_invisible_or_control_characters(label):
    event = _total(json.dumps({"id": 1, "x": [0.0], "label": label}).encode())
    if event is not None and event.label is not None:
        label = event.label
        assert unicodedata.normalize("NFC", label) == label
        forbidden = {c for c in label if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")}
        assert forbidden == set(), f"{label!r} holds {sorted(map(hex, map(ord, forbidden)))}"
        assert all(segment and segment == segment.strip() for segment in label.split("/"))
        LabelTree().add(label)  # what the parser accepts, the tree takes


