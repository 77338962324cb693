"""The event contract, version 1: what the daemon reads from and writes to Kafka (the events in,
the prediction documents out). Below everything that reads or writes them: producer, daemon,
replica, HTTP and ``tail``.

Input value (UTF-8 JSON object):

- ``id``: string or integer, the event's identity (the dedupe key of its prediction);
- ``ts``: number, the event time in seconds since the epoch (optional);
- features, either ``x``: a list of numbers, or ``x_b64`` + ``dtype`` (``float32`` or
  ``uint8``) + ``shape`` (list of ints): the raw little-endian bytes, base64-encoded; or, instead
  of features, ``text``: a string the daemon's sentence encoder turns into features
  (``hle_stream.text``);
- ``label`` (optional): a label path such as ``clothes/tops``; without it the event is only
  predicted, never trained on.

A *label event* is ``id`` + ``label`` (+ ``ts``) without features: the label of an event seen
earlier, or a finer label for it (``parse_event(..., labels_alone=True)`` returns a
``LabelEvent``; ``hle_stream.service.join_store`` keeps the features it joins with).

Anything else is rejected with one reason from ``EventError.REASONS``; the daemon sends the
original bytes, the reason and the source offset to the dead-letter topic and goes on. Parsing
is total: whatever the bytes, ``parse_event`` returns an ``Event`` or raises ``EventError``
(``tests/unit/test_fuzz.py`` holds it to that).

Limits, each a dead letter when broken: the whole value ``max_bytes`` (``too_large``); ``id``
at most ``MAX_ID_CHARS`` characters and valid Unicode, an integer id within 64 bits
(``bad_id``); features a non-empty vector ``(D,)`` or image ``(C, H, W)`` (``wrong_shape``)
whose float values are finite (``non_finite``) and within ``±max_abs_feature``
(``out_of_range``); a text valid Unicode (``bad_encoding``) and at most ``max_text_chars``
characters (``too_large``; an empty text is a text); features and text both, or neither, in one
event (``wrong_type``, ``missing_field``); the label a valid path once normalized to NFC
(``bad_label``, see ``hle_stream.core.hierarchy.LabelTree``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hle_stream.core.hierarchy import LabelPathError, LabelTree, normalize_label

if TYPE_CHECKING:
    import torch

CONTRACT_VERSION = 1
DTYPES = {"float32": np.float32, "uint8": np.uint8}
MAX_ID_CHARS = 256
"""Longest id accepted: it is the key of every prediction, so it must stay far below Kafka's
record limit."""
DEFAULT_MAX_ABS_FEATURE = 1e6
"""Float features beyond this magnitude are refused: finite but huge values overflow the
network's activations and turn its weights to NaN (``--max-abs-feature``)."""
DEFAULT_MAX_TEXT_CHARS = 100_000
"""Longest text accepted (``--max-text-chars``): the encoder reads only the first few hundred
word pieces, so a longer text is more likely a mistake than a document."""
_INT64 = 2**63
_FEATURE_FIELDS = ("x", "x_b64")


class EventError(ValueError):
    """An event that cannot be used; ``reason`` is one of a fixed set (a metric label)."""

    REASONS = ("too_large", "not_json", "not_object", "missing_field", "wrong_type",
               "bad_encoding", "wrong_shape", "non_finite", "bad_label", "bad_id", "out_of_range", "duplicate_id")

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


DEAD_LETTER_REASONS = EventError.REASONS + ("internal_error", "label_expired", "label_unknown_id")
"""Every reason a dead letter can carry: the event's own faults, ``internal_error`` for a record
that tripped a bug in hle-stream (its traceback is logged; processing goes on), and the label
events that found no features to join: ``label_expired`` (its event left the join store) and
``label_unknown_id`` (no event with that id was seen)."""


@dataclass(frozen=True)
class Event:
    """An event with its features ``x``, or with ``text`` (and ``x`` None until the encoder
    has turned the text into features)."""

    id: str
    ts: float | None
    x: np.ndarray | None
    label: str | None
    text: str | None = None


@dataclass(frozen=True)
class LabelEvent:
    """The label of an event sent earlier (or a finer one), without its features."""

    id: str
    ts: float | None
    label: str


def _features(doc: dict[str, Any], expected_shape: Sequence[int] | None, max_abs: float) -> np.ndarray:
    if "x" in doc:
        values = doc["x"]
        if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
            raise EventError("wrong_type", "x must be a list of numbers")
        if any(type(v) is int and not -_INT64 < v < _INT64 for v in values):
            raise EventError("out_of_range", f"an integer feature beyond ±{max_abs:g}")
        with np.errstate(over="ignore"):  # beyond float32 becomes inf: refused below as non_finite
            x = np.asarray(values, dtype=np.float32)
    elif "x_b64" in doc:
        dtype, shape, encoded = doc.get("dtype"), doc.get("shape"), doc["x_b64"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise EventError("wrong_type", f"dtype must be one of {sorted(DTYPES)}")
        if not isinstance(shape, list) or not all(type(s) is int and 0 < s < _INT64 for s in shape):
            raise EventError("wrong_type", "shape must be a list of positive integers")
        if not isinstance(encoded, str):
            raise EventError("wrong_type", "x_b64 must be a base64 string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise EventError("bad_encoding", "x_b64 is not valid base64") from None
        if len(raw) != math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize:
            raise EventError("wrong_shape", f"{len(raw)} bytes do not fill shape {shape} of {dtype}")
        x = np.frombuffer(raw, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<")).reshape(shape).astype(DTYPES[dtype])
    else:
        raise EventError("missing_field", "an event needs x, x_b64 or text")
    if x.ndim not in (1, 3) or x.size == 0:
        raise EventError("wrong_shape", f"features of shape {tuple(x.shape)}: a non-empty vector (D,) or image "
                                        "(C, H, W) is expected")
    if expected_shape is not None and tuple(x.shape) != tuple(expected_shape):
        raise EventError("wrong_shape", f"features of shape {tuple(x.shape)}, expected {tuple(expected_shape)}")
    if x.dtype == np.float32:
        if not np.isfinite(x).all():
            raise EventError("non_finite", "features hold NaN or Inf")
        if float(np.abs(x).max()) > max_abs:
            raise EventError("out_of_range", f"a feature beyond ±{max_abs:g} (--max-abs-feature)")
    return x


def _text(doc: dict[str, Any], max_chars: int) -> str:
    text = doc["text"]
    if any(name in doc for name in _FEATURE_FIELDS):
        raise EventError("wrong_type", "an event carries features (x or x_b64) or text, not both")
    if not isinstance(text, str):
        raise EventError("wrong_type", "text must be a string")
    if len(text) > max_chars:
        raise EventError("too_large", f"a text of {len(text)} characters; at most {max_chars} (--max-text-chars)")
    return _valid_unicode(text, "bad_encoding", "the text")


def parse_event(
    raw: bytes | None, expected_shape: Sequence[int] | None = None, tree: LabelTree | None = None,
    max_bytes: int = 4 << 20, max_abs_feature: float = DEFAULT_MAX_ABS_FEATURE, labels_alone: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> Event | LabelEvent:
    """Decode and validate one input value; raises ``EventError`` and nothing else.

    With ``tree`` the label is checked against its depth and class cap without being added.
    With ``labels_alone`` an ``id`` + ``label`` without features is a ``LabelEvent``; otherwise
    it lacks its features (``missing_field``).
    """
    if raw is None:
        raise EventError("not_json", "no value (a tombstone)")
    if len(raw) > max_bytes:
        raise EventError("too_large", f"{len(raw)} bytes exceed the limit of {max_bytes}")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EventError("not_json", str(err)) from None
    except RecursionError:
        raise EventError("not_json", "nested too deeply") from None
    return event_from_document(doc, expected_shape, tree, max_abs_feature, labels_alone, max_text_chars)


def event_from_document(
    doc: object, expected_shape: Sequence[int] | None = None, tree: LabelTree | None = None,
    max_abs_feature: float = DEFAULT_MAX_ABS_FEATURE, labels_alone: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> Event | LabelEvent:
    """Validate an already decoded JSON value (the HTTP API decodes the body itself). A text
    event comes back with ``x`` None: ``expected_shape`` applies to its features once encoded."""
    if not isinstance(doc, dict):
        raise EventError("not_object", "the value must be a JSON object")
    if "id" not in doc:
        raise EventError("missing_field", "an event needs an id")
    event_id = _event_id(doc["id"])
    ts = doc.get("ts")
    if ts is not None:
        if type(ts) not in (int, float) or not (type(ts) is float or -_INT64 < ts < _INT64) or not math.isfinite(ts):
            raise EventError("wrong_type", "ts must be a finite number")
    label = doc.get("label")
    if label is not None:
        if not isinstance(label, str):
            raise EventError("wrong_type", "label must be a string path such as clothes/tops")
        label = normalize_label(label)
        try:
            (tree or LabelTree(max_depth=64, max_classes=10**9)).check(label)
        except LabelPathError as err:
            raise EventError("bad_label", str(err)) from None
    ts = None if ts is None else float(ts)
    if labels_alone and label is not None and not any(name in doc for name in (*_FEATURE_FIELDS, "text")):
        return LabelEvent(event_id, ts, label)
    if "text" in doc:
        return Event(event_id, ts, None, label, _text(doc, max_text_chars))
    return Event(event_id, ts, _features(doc, expected_shape, max_abs_feature), label)


def _event_id(value: object) -> str:
    """The id as a string that any JSON or Kafka key can carry."""
    if type(value) is int:
        if not -_INT64 < value < _INT64:
            raise EventError("bad_id", "an integer id must fit in 64 bits")
        return str(value)
    if not isinstance(value, str):
        raise EventError("wrong_type", "id must be a string or an integer")
    if not value or len(value) > MAX_ID_CHARS:
        raise EventError("bad_id", f"an id of {len(value)} characters; 1 to {MAX_ID_CHARS} are accepted")
    return _valid_unicode(value, "bad_id", "the id")


def _valid_unicode(value: str, reason: str, what: str) -> str:
    """JSON may escape half a surrogate pair, which no UTF-8 output can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EventError(reason, f"{what} holds an unpaired surrogate (not valid Unicode)") from None
    return value


def encode_features(x: np.ndarray) -> dict[str, Any]:
    """The compact ``x_b64`` form of a feature array (float32 or uint8)."""
    name = {np.dtype(np.float32): "float32", np.dtype(np.uint8): "uint8"}[x.dtype]
    data = np.ascontiguousarray(x, dtype=np.dtype(x.dtype).newbyteorder("<")).tobytes()
    return {"x_b64": base64.b64encode(data).decode("ascii"), "dtype": name, "shape": list(x.shape)}


def feature_dtype(event: Event) -> torch.dtype:
    import torch  # here, not at the top: the settings (and so the CLI's start) read this module's constants

    return torch.from_numpy(event.x[:0]).dtype


def require_dtype(event: Event, expected: torch.dtype) -> None:
    """A model takes one feature dtype for good: an event of another is ``wrong_type``."""
    actual = feature_dtype(event)
    if actual != expected:
        raise EventError("wrong_type", f"features of dtype {actual}; the model takes {expected}")


def require_kind(event: Event, model_reads_text: bool) -> None:
    """A model learns from text or from features for good: an event of the other kind is ``wrong_type``."""
    if (event.text is not None) != model_reads_text:
        raise EventError("wrong_type", "this model learns from text events; features (x) are refused" if model_reads_text
                         else "this model learns from features (x); text events are refused")


def require_shape(event: Event, expected: Sequence[int]) -> None:
    """A model takes one feature shape for good (a text event's features: its encoder's)."""
    if tuple(event.x.shape) != tuple(expected):
        raise EventError("wrong_shape", f"features of shape {tuple(event.x.shape)}, expected {tuple(expected)}")


def prediction_document(event_id: str, model_version: int, path: list[dict[str, Any]],
                        label: str | None = None) -> dict[str, Any]:
    """Output contract, version 1: one prediction, as published to the predictions topic (keyed by
    ``id``) and answered by ``POST /predict``. ``path`` runs from the coarsest level down
    (``hle_stream.core.predictor.prediction_paths``); ``label`` echoes the input's label on the stream."""
    document = {"id": event_id, "model_version": model_version, "path": path}
    if label:
        document["label"] = label
    return document
