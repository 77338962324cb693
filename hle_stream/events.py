"""The event contract, version 1: what the daemon reads from and writes to Kafka.

Input value (UTF-8 JSON object):

- ``id``: string or integer, the event's identity (the dedupe key of its prediction);
- ``ts``: number, the event time in seconds since the epoch (optional);
- features, either ``x``: a list of numbers, or ``x_b64`` + ``dtype`` (``float32`` or
  ``uint8``) + ``shape`` (list of ints): the raw little-endian bytes, base64-encoded;
- ``label`` (optional): a label path such as ``clothes/tops``; without it the event is only
  predicted, never trained on.

Anything else is rejected with one reason from ``EventError.REASONS``; the daemon sends the
original bytes, the reason and the source offset to the dead-letter topic and goes on.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hle_stream.hierarchy import LabelPathError, LabelTree

CONTRACT_VERSION = 1
DTYPES = {"float32": np.float32, "uint8": np.uint8}


class EventError(ValueError):
    """An event that cannot be used; ``reason`` is one of a fixed set (a metric label)."""

    REASONS = ("too_large", "not_json", "not_object", "missing_field", "wrong_type",
               "bad_encoding", "wrong_shape", "non_finite", "bad_label")

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Event:
    id: str
    ts: float | None
    x: np.ndarray
    label: str | None


def _features(doc: dict[str, Any], expected_shape: Sequence[int] | None) -> np.ndarray:
    if "x" in doc:
        values = doc["x"]
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise EventError("wrong_type", "x must be a list of numbers")
        x = np.asarray(values, dtype=np.float32)
    elif "x_b64" in doc:
        dtype, shape = doc.get("dtype"), doc.get("shape")
        if dtype not in DTYPES:
            raise EventError("wrong_type", f"dtype must be one of {sorted(DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise EventError("wrong_type", "shape must be a list of positive integers")
        try:
            raw = base64.b64decode(doc["x_b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise EventError("bad_encoding", "x_b64 is not valid base64") from None
        if len(raw) != math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize:
            raise EventError("wrong_shape", f"{len(raw)} bytes do not fill shape {shape} of {dtype}")
        x = np.frombuffer(raw, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<")).reshape(shape).astype(DTYPES[dtype])
    else:
        raise EventError("missing_field", "an event needs x or x_b64")
    if expected_shape is not None and tuple(x.shape) != tuple(expected_shape):
        raise EventError("wrong_shape", f"features of shape {tuple(x.shape)}, expected {tuple(expected_shape)}")
    if x.dtype == np.float32 and not np.isfinite(x).all():
        raise EventError("non_finite", "features hold NaN or Inf")
    return x


def parse_event(
    raw: bytes | None, expected_shape: Sequence[int] | None = None, tree: LabelTree | None = None, max_bytes: int = 4 << 20
) -> Event:
    """Decode and validate one input value; raises ``EventError``.

    With ``tree`` the label is checked against its depth and class cap without being added.
    """
    if raw is None:
        raise EventError("not_json", "no value (a tombstone)")
    if len(raw) > max_bytes:
        raise EventError("too_large", f"{len(raw)} bytes exceed the limit of {max_bytes}")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EventError("not_json", str(err)) from None
    return event_from_document(doc, expected_shape, tree)


def event_from_document(
    doc: object, expected_shape: Sequence[int] | None = None, tree: LabelTree | None = None
) -> Event:
    """Validate an already decoded JSON value (the HTTP API decodes the body itself)."""
    if not isinstance(doc, dict):
        raise EventError("not_object", "the value must be a JSON object")
    if "id" not in doc:
        raise EventError("missing_field", "an event needs an id")
    if not isinstance(doc["id"], (str, int)) or isinstance(doc["id"], bool):
        raise EventError("wrong_type", "id must be a string or an integer")
    ts = doc.get("ts")
    if ts is not None and (not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts)):
        raise EventError("wrong_type", "ts must be a finite number")
    label = doc.get("label")
    if label is not None:
        if not isinstance(label, str):
            raise EventError("wrong_type", "label must be a string path such as clothes/tops")
        try:
            (tree or LabelTree(max_depth=64, max_classes=10**9)).check(label)
        except LabelPathError as err:
            raise EventError("bad_label", str(err)) from None
    return Event(str(doc["id"]), None if ts is None else float(ts), _features(doc, expected_shape), label)


def encode_features(x: np.ndarray) -> dict[str, Any]:
    """The compact ``x_b64`` form of a feature array (float32 or uint8)."""
    name = {np.dtype(np.float32): "float32", np.dtype(np.uint8): "uint8"}[x.dtype]
    data = np.ascontiguousarray(x, dtype=np.dtype(x.dtype).newbyteorder("<")).tobytes()
    return {"x_b64": base64.b64encode(data).decode("ascii"), "dtype": name, "shape": list(x.shape)}


def prediction_path(tree: LabelTree, probabilities: Sequence[np.ndarray], threshold: float) -> list[dict[str, Any]]:
    """Coarse-to-fine predictions for one sample: the best class of each level, coarsest first,
    stopping before the first level whose best probability is below ``threshold``."""
    path = []
    for level, probs in enumerate(probabilities, start=1):
        best = int(np.argmax(probs))
        if probs[best] < threshold:
            break
        path.append({"level": level, "label": tree.path_of(level, best), "probability": float(probs[best])})
    return path
