"""The daemon's encoder for text events: loaded when the first text comes (a daemon on vectors
never loads it), then used once per micro-batch on all of the batch's texts together.

An encoder that cannot be loaded (the ``[text]`` extra missing, a folder that holds no sentence
encoder) is reported once in the log and every text event is dead-lettered with the reason
(``wrong_type``); events with features go on as before.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from connectors.extras import MissingExtra
from hle_stream.contract import Event, EventError, require_kind
from hle_stream.service.telemetry import NO_TELEMETRY, NoTelemetry, Telemetry
from hle_stream.text.encoder import EncoderChoice, EncoderError, TextEncoder

log = logging.getLogger(__name__)


class TextFeatures:
    """Owns the loaded encoder (or the reason it could not be loaded); safe to call from the
    stream's thread and HTTP's at once."""

    def __init__(self, choice: EncoderChoice, device: str, telemetry: Telemetry | NoTelemetry = NO_TELEMETRY) -> None:
        self.choice = choice
        self.device = device
        self.telemetry = telemetry
        self._encoder: TextEncoder | None = None
        self._unusable: str | None = None
        self._batches = self._texts = 0
        self._seconds = 0.0
        self._lock = threading.Lock()  # the stream and /predict share it (a tokenizer takes one caller at a time)

    @property
    def identity(self) -> dict[str, Any]:
        return self.choice.identity

    def _loaded(self) -> TextEncoder:
        if self._unusable is not None:
            raise EventError("wrong_type", self._unusable)
        if self._encoder is None:
            started = time.perf_counter()
            try:
                self._encoder = TextEncoder(self.choice, self.device)
            except (MissingExtra, EncoderError) as err:
                self._unusable = f"this daemon cannot read text events: {err}"
                log.error("%s", self._unusable)
                raise EventError("wrong_type", self._unusable) from None
            log.info("text encoder %s loaded in %.1f s (%d-d features)", self.identity["encoder"],
                     time.perf_counter() - started, self._encoder.dim)
        return self._encoder

    def encode(self, events: list[Event]) -> list[Event]:
        """The events with their texts' features as ``x``, in one encoder call; raises
        ``EventError`` when no encoder can be loaded."""
        with self._lock:
            encoder = self._loaded()
            started = time.perf_counter()
            vectors = encoder.encode([event.text for event in events])
            seconds = time.perf_counter() - started
        self.telemetry.record_encoding(len(events), seconds)
        self._batches, self._texts, self._seconds = self._batches + 1, self._texts + len(events), self._seconds + seconds
        return [replace(event, x=vector) for event, vector in zip(events, vectors)]

    def cost(self) -> tuple[float, float] | None:
        """Mean seconds per encoded micro-batch and texts per second of encoder time (None: none yet)."""
        if not self._batches:
            return None
        return self._seconds / self._batches, self._texts / max(self._seconds, 1e-9)

    def for_model(self, events: list[Event], model_reads_text: bool) -> list[Event]:
        """``events`` as the model takes them: texts encoded, and every event of the model's kind
        (raises ``EventError`` for one of the other kind, or when no encoder can be loaded)."""
        for event in events:
            require_kind(event, model_reads_text)
        return self.encode(events) if model_reads_text and events else events
