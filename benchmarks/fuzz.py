"""Fuzz the event parser and the micro-batch step with generated records; print what escaped.

    python benchmarks/fuzz.py --records 100000 --seed 0

Records are valid events (vectors and images, labelled or not) put through random mutations:
fields dropped or replaced by any JSON value, extreme and non-finite numbers, ids and labels of
random Unicode (unpaired surrogates, control and bidi characters, kilobytes long), wrong
shapes and dtypes, broken base64, deep nesting, truncated or bit-flipped bytes, raw noise,
tombstones, duplicate ids. They go through ``MicroBatchProcessor`` in micro-batches of 64 with
an in-memory sink; every so often a fresh processor starts, so that fuzzed records also arrive
first (when they would fix the model's input). After every batch it checks: no exception
escaped, every record ended as exactly one prediction, dead letter or label join, every output is strict
JSON, every weight is finite. It prints one JSON line; ``tests/integration/test_fuzz_micro_batch.py`` runs it small.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from connectors.memory import ListSink, RawRecord
from hle_stream.contract import EventError, parse_event  # noqa: E402
from hle_stream.core.config import LearnerConfig  # noqa: E402
from hle_stream.service.config import ProcessingConfig  # noqa: E402
from hle_stream.service.processing import MicroBatchProcessor

DIM = 8
IMAGE = (1, 8, 8)
LABELS = ["a", "a/x", "a/x/1", "a/y", "b", "b/z", "b/z/2", "c/w/3"]
NASTY_TEXT = ["\ud800", "\udfff", "\u202e", "\u200b", "\x00", "\x1b[31m", "\ufeff", "\u2028", "e\u0301", "\U0001f600",
              "/", "//", " ", "\t", "..", "\\", '"', "\ue000", "\U000e0001"]
EXTREME_NUMBERS = [0, -0.0, 1e-45, 3.4e38, 3.5e38, 1e300, -1e300, 1e6, 1e6 + 1, 2**63, -(2**63), 2**64, 10**400,
                   float("nan"), float("inf"), float("-inf"), True, None, "1"]



class Fuzzer:
    """Seeded generator of raw record values, most of them broken in one way or several."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0
        self.images = False  # the kind of most valid events (the stream's shape); switched per processor

    def valid(self) -> dict:
        rng = self.rng
        self.n += 1
        event: dict = {"id": f"e{self.n}" if rng.random() < 0.9 else self.n}
        if self.images == (rng.random() < 0.05):
            event["x"] = [rng.uniform(-3, 3) for _ in range(DIM)]
        else:
            image = np.frombuffer(rng.randbytes(int(np.prod(IMAGE))), dtype=np.uint8).reshape(IMAGE)
            event.update(x_b64=base64.b64encode(image.tobytes()).decode(), dtype="uint8", shape=list(IMAGE))
        if rng.random() < 0.8:
            event["label"] = rng.choice(LABELS)
        if rng.random() < 0.3:
            event["ts"] = rng.uniform(0, 2e9)
        return event

    def any_json(self, depth: int = 0) -> object:
        rng = self.rng
        kind = rng.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return rng.choice(EXTREME_NUMBERS)
        if kind == 1:
            return self.text()
        if kind == 2:
            return rng.randint(-(2**70), 2**70)
        if kind == 3:
            return rng.random() * 10 ** rng.randint(-50, 50)
        if kind == 4:
            return None
        if kind == 5:
            return [self.any_json(depth + 1) for _ in range(rng.randrange(5))]
        if kind == 6:
            return {self.text(): self.any_json(depth + 1) for _ in range(rng.randrange(4))}
        return self.valid()

    def text(self) -> str:
        rng = self.rng
        parts = [rng.choice(NASTY_TEXT) if rng.random() < 0.4 else chr(rng.randrange(0x20, 0x3000))
                 for _ in range(rng.randrange(1, 12))]
        if rng.random() < 0.05:
            parts.append("x" * rng.choice([200, 300, 600, 5000]))
        return "".join(parts)

    def mutate(self, event: dict) -> dict:
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            choice = rng.randrange(11)
            field = rng.choice(["id", "x", "x_b64", "dtype", "shape", "label", "ts"])
            if choice == 0:
                event.pop(field, None)
            elif choice == 1:
                event[field] = self.any_json()
            elif choice == 2:
                event["label"] = "/".join(self.text() for _ in range(rng.randrange(1, 11)))
            elif choice == 3:
                event["id"] = self.text()
            elif choice == 4 and isinstance(event.get("x"), list) and event["x"]:
                event["x"][rng.randrange(len(event["x"]))] = rng.choice(EXTREME_NUMBERS)
            elif choice == 5:
                event["x"] = [rng.choice(EXTREME_NUMBERS) for _ in range(rng.choice([0, 1, DIM, DIM + 1]))]
            elif choice == 6:
                shape = [rng.choice([0, 1, 2, 8, 2**31, -1]) for _ in range(rng.randrange(0, 5))]
                dtype = rng.choice(["uint8", "float32", "int64", "float64", 7, None])
                size = rng.choice([0, 1, 64, 256, 257])
                event.update(x_b64=base64.b64encode(rng.randbytes(size)).decode(), dtype=dtype, shape=shape)
                event.pop("x", None)
            elif choice == 7:
                event["x_b64"] = rng.choice(["***", "AAA", "", "====", "\u00e9\u00e9\u00e9\u00e9", 12])
            elif choice == 8:  # float32 bytes holding NaN / Inf / huge values
                values = np.array([rng.choice([np.nan, np.inf, 1e30, -1e38, 1.0]) for _ in range(DIM)], np.float32)
                event.update(x_b64=base64.b64encode(values.tobytes()).decode(), dtype="float32", shape=[DIM])
                event.pop("x", None)
            elif choice == 9:
                event["label"] = rng.choice(LABELS) + rng.choice(["/", " ", "/\u202e", "/" + "d/" * 8 + "e"])
            else:
                event["id"] = f"e{rng.randrange(1, max(2, self.n))}"  # a likely duplicate
        return event

    def value(self) -> bytes | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            return json.dumps(self.valid()).encode()
        if roll < 0.75:
            return json.dumps(self.mutate(self.valid())).encode()
        if roll < 0.8:
            return None  # a tombstone
        if roll < 0.85:
            return rng.randbytes(rng.randrange(0, 200))
        if roll < 0.9:  # truncated or bit-flipped JSON
            raw = bytearray(json.dumps(self.valid()).encode())
            if rng.random() < 0.5:
                return bytes(raw[: rng.randrange(len(raw))])
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            return bytes(raw)
        if roll < 0.93:
            depth = rng.choice([10, 1000, 100_000])
            return b"[" * depth + b"]" * depth
        if roll < 0.96:  # raw JSON with escapes json.dumps would not write
            return rb'{"id": "s\ud800", "x": [1,2,3,4,5,6,7,8], "label": "a/\udc00"}'
        return json.dumps(self.any_json()).encode()


def _joined(processor: MicroBatchProcessor) -> int:
    """Label events that ended in a join outcome (the expired and unknown ones are dead letters)."""
    return sum(n for outcome, n in processor.label_outcomes.items() if outcome not in ("expired", "unknown"))


def fuzz(records: int, seed: int, batch: int = 64, fresh_every: int = 2048) -> dict:
    torch.manual_seed(seed)
    fuzzer = Fuzzer(seed)
    config = ProcessingConfig(learner_config=LearnerConfig(memory_size=64, batch_size=8, device="cpu", max_classes=40),
                              max_message_bytes=64 * 1024, dedupe_window=1000)
    failures: list[str] = []
    parser_escapes = step_escapes = outputs_missing = non_strict = non_finite = 0
    reasons: Counter = Counter()
    predicted = processors = 0
    started = time.monotonic()
    processor, sink = None, None
    for start in range(0, records, batch):
        if start % fresh_every == 0:
            sink = ListSink()
            fuzzer.images = not fuzzer.images
            processor, processors = MicroBatchProcessor(config), processors + 1
        values = [fuzzer.value() for _ in range(min(batch, records - start))]
        for value in values:  # the parser alone: EventError or an event, nothing else
            try:
                parse_event(value, max_bytes=config.max_message_bytes)
            except EventError:
                pass
            except Exception:
                parser_escapes += 1
                failures.append(traceback.format_exc(limit=3))
        before = (len(sink.predictions), len(sink.dead_letters), _joined(processor))
        try:
            processor.process([RawRecord("fuzz", 0, start + i, v) for i, v in enumerate(values)], sink)
        except Exception:
            step_escapes += 1
            failures.append(traceback.format_exc(limit=5))
            continue
        new_predictions = sink.predictions[before[0]:]
        new_dead = sink.dead_letters[before[1]:]
        joined = _joined(processor) - before[2]  # label events with a join outcome and no output
        outputs_missing += abs(len(values) - len(new_predictions) - len(new_dead) - joined)
        predicted += len(new_predictions)
        reasons.update(reason for _, reason, _ in new_dead)
        for document in new_predictions:
            try:
                json.dumps(document, allow_nan=False).encode()
            except (ValueError, UnicodeEncodeError):
                non_strict += 1
        learner = processor.learner
        if learner is not None and not learner.finite():
            non_finite += 1
    return {"seed": seed, "records": records, "processors": processors, "seconds": round(time.monotonic() - started, 1),
            "parser_exceptions_escaped": parser_escapes, "step_exceptions_escaped": step_escapes,
            "records_without_exactly_one_output": outputs_missing, "non_strict_json_outputs": non_strict,
            "batches_with_non_finite_weights": non_finite, "predicted": predicted,
            "dead_lettered_by_reason": dict(sorted(reasons.items())), "first_failures": failures[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(fuzz(args.records, args.seed)), flush=True)


if __name__ == "__main__":
    main()
