"""Fingerprints of what the daemon's micro-batch step produces, to show a refactor changes nothing.

One deterministic stream (features, labels with the events, label events that come later,
refinements, duplicate ids, labels past a small class cap, records that are not events) goes
through ``MicroBatchProcessor`` for each method; the SHA-256 of the predictions, the dead letters
(reason and detail), the join outcomes and the checkpoint state (the learner's included; the
random lineage id left out) is its fingerprint. Write them at one commit, check them at another:

    python benchmarks/processing_fingerprints.py --write /tmp/before.json
    python benchmarks/processing_fingerprints.py --check /tmp/before.json

Bit-for-bit equality holds for one machine and torch build: compare runs made on the same one.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from connectors.memory import ListSink, RawRecord
from hle_stream.core.config import LearnerConfig
from hle_stream.service.config import ProcessingConfig
from hle_stream.service.processing import MicroBatchProcessor

RUNS = {"hle": {}, "er": {}, "pl-fms": {}, "hle-class-cap-16": {"max_classes": 16}}
LABELS = ["a", "a/x", "a/y", "b", "b/z", "b/z/q", "c/w"]


def stream() -> list[bytes]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(900):
        label = LABELS[i % len(LABELS)] if i % 5 else None
        x = (rng.normal(size=8) + (LABELS.index(label) if label else 0)).astype(np.float32).tolist()
        event = {"id": f"e{i}", "x": x, **({"label": label} if label and i % 3 == 0 else {})}
        records.append(json.dumps(event).encode())
        if i % 3 == 1 and label:  # its label, later (the coarsest level)
            records.append(json.dumps({"id": f"e{i}", "label": label.split("/")[0]}).encode())
        if i % 11 == 0 and i > 10:  # a finer label for an earlier event (or a conflicting one)
            records.append(json.dumps({"id": f"e{i - 10}", "label": "a/x"}).encode())
        if i % 50 == 7:  # the same id again
            records.append(json.dumps(event).encode())
        if i % 61 == 5:  # a class of its own: past a small class cap
            records.append(json.dumps({"id": f"cap{i}", "x": x, "label": f"n{i}/m{i}"}).encode())
        if i % 97 == 0:  # not events
            records += [b"not json", json.dumps({"id": f"e{i}", "x": [1.0]}).encode(), b"{}"]
    return records


def _sha(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(method: str, learner_changes: dict) -> dict:
    torch.set_num_threads(1)
    config = ProcessingConfig(method=method, join_window=300, learner_config=LearnerConfig(
        memory_size=64, batch_size=8, device="cpu", **learner_changes))
    processor, sink = MicroBatchProcessor(config), ListSink()
    records = stream()
    for start in range(0, len(records), 32):
        processor.process([RawRecord("t", 0, start + k, v) for k, v in enumerate(records[start:start + 32])], sink)
    state = processor.state_dict()
    state.pop("model_id")
    state["joins"].pop("arrived_at")  # wall-clock times; everything else in the join store counts
    learner_bytes = io.BytesIO()
    torch.save(state.pop("learner"), learner_bytes)
    return {"predictions": _sha(sink.predictions), "dead_letters": _sha([(r, d) for _, r, d in sink.dead_letters]),
            "outcomes": dict(processor.label_outcomes), "state": _sha(state), "state_keys": list(state),
            "learner": hashlib.sha256(learner_bytes.getvalue()).hexdigest()}


def main() -> int:
    logging.disable(logging.WARNING)  # every dead letter and conflict is logged: thousands of lines
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path)
    action.add_argument("--check", type=Path)
    args = parser.parse_args()
    found = {name: fingerprint(name.split("-class-cap")[0], changes) for name, changes in RUNS.items()}
    if args.write:
        args.write.write_text(json.dumps(found, indent=1, sort_keys=True))
        print(f"wrote {len(found)} fingerprints to {args.write}")
        return 0
    written = json.loads(args.check.read_text())
    different = [name for name in written if written[name] != found.get(name)]
    for name in written:
        print(f"{name}: {'different' if name in different else 'identical'}")
    print(f"{len(written) - len(different)} identical, {len(different)} different")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
