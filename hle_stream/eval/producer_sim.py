"""The producer simulation: a dataset streamed into a topic in HLE order, as events (contract v1).

It follows the benchmark's stream for (dataset, scenario, seed), so the daemon sees labels grow
finer exactly as the benchmark's learner does. ``unlabelled_fraction`` of the events go out
without their label, to exercise pure prediction. ``with_delayed_labels`` sends labels as label
events (``{"id", "label"}``) some events after their features, and, with ``refine``, sends
each event with its coarsest label and the full label later: the daemon then joins them by id.
"""

from __future__ import annotations

import heapq
import json
import time
from typing import Callable, Iterable, Iterator

import numpy as np
from kafka import KafkaProducer

from connectors.settings import KafkaSettings
from hle_stream.contract import encode_features
from hle_stream.eval.datasets import HierarchicalDataset
from hle_stream.eval.streams import build_stream, stratified_subsample


def simulated_events(
    dataset: HierarchicalDataset, scenario: str, seed: int, limit: int | None = None,
    unlabelled_fraction: float = 0.0,
) -> Iterator[dict]:
    """Event documents in stream order; ids are ``<stream position>-<sample index>``. A text
    dataset's events carry ``text``."""
    subset = stratified_subsample(dataset.labels_train, limit, seed)
    stream = build_stream(dataset.labels_train[subset], scenario, seed)
    rng = np.random.default_rng(seed + 1)
    for position, (row, label) in enumerate(zip(subset[stream.indices], stream.labels)):
        sample = dataset.x_train[row]
        event = {"id": f"{position}-{row}", "ts": time.time(),
                 **({"text": sample} if dataset.is_text else encode_features(sample))}
        if rng.random() >= unlabelled_fraction:
            event["label"] = str(label)
        yield event


def with_delayed_labels(events: Iterable[dict], delay: int, jitter: int = 0, refine: bool = False,
                        seed: int = 0) -> Iterator[dict]:
    """``events`` with each label sent as a label event ``delay`` (± ``jitter``, at least 1)
    events later. With ``refine``, an event whose label has several levels keeps its coarsest
    label and the full one follows as the label event (a single-level label stays with it)."""
    rng = np.random.default_rng(seed + 2)
    waiting: list[tuple[int, int, dict]] = []  # (due position, tie-breaker, label event)
    for position, event in enumerate(events):
        while waiting and waiting[0][0] <= position:
            yield heapq.heappop(waiting)[2]
        label = event.get("label")
        if label is None or (refine and "/" not in label):
            yield event
            continue
        kept = {key: value for key, value in event.items() if key != "label"}
        if refine:
            kept["label"] = label.split("/", 1)[0]
        yield kept
        due = position + max(1, delay + (int(rng.integers(-jitter, jitter + 1)) if jitter else 0))
        heapq.heappush(waiting, (due, position, {"id": event["id"], "label": label}))
    while waiting:
        yield heapq.heappop(waiting)[2]


def simulated_event_count(dataset: HierarchicalDataset, scenario: str, seed: int, limit: int | None = None) -> int:
    """How many events ``simulated_events`` yields (the stratified subsample, twice for dual-label)."""
    n = len(stratified_subsample(dataset.labels_train, limit, seed))
    return 2 * n if scenario == "dual-label" else n


def jsonl_events(lines: Iterable[str], on_bad: Callable[[int, str], None]) -> Iterator[dict]:
    """Events from JSON lines (one event of the contract per line; blank lines skipped). A line
    that is not a JSON object with an ``id`` is reported through ``on_bad(line number, reason)``
    and skipped; the daemon checks everything else and dead-letters what fails."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as err:
            on_bad(number, f"not JSON ({err})")
            continue
        if not isinstance(event, dict) or "id" not in event:
            on_bad(number, "not an event: a JSON object with an \"id\" is expected")
            continue
        yield event


def produce(
    settings: KafkaSettings, topic: str, events: Iterator[dict], rate: float | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send ``events`` to ``topic`` (at most ``rate`` per second when given); returns the count."""
    producer = KafkaProducer(**settings.client(), linger_ms=20, batch_size=262_144)
    started, sent = time.monotonic(), 0
    try:
        for event in events:
            if rate:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(topic, json.dumps(event).encode())
            sent += 1
            if on_sent and sent % 500 == 0:
                on_sent(sent)
        producer.flush()
    finally:
        producer.close()
    if on_sent:
        on_sent(sent)
    return sent
