"""Fingerprints of what each learner configuration computes, to show a refactor changes nothing.

Every configuration in a JSON file of resolved learner settings is trained on the same two small
streams (vectors, and colour images so that crop/flip and CutMix run) with labels growing finer;
the SHA-256 of its final ``state_dict`` (every tensor and value but the settings themselves) and of
its probabilities on a probe set is its fingerprint. Write them at one commit, check them at
another:

    python benchmarks/learner_fingerprints.py --write /tmp/before.json --configs CONFIGS.json
    python benchmarks/learner_fingerprints.py --check /tmp/before.json

``--configs`` maps names to resolved settings (``dataclasses.asdict(LearnerConfig)``); without it
the presets and the former method names of this checkout are used. ``--check`` resolves each name
of the written file again in this checkout and reports any config or fingerprint that differs.
Bit-for-bit equality holds for one machine and torch build: compare runs made on the same one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from hle_stream.core.config import LearnerConfig
from hle_stream.core.learner import HierarchicalLearner

PATHS = ["a", "b", "c", "a/x", "b/y", "c/z", "a/w", "a/x/1", "b/y/2", "a/x/3", "c/z/4", "a/w/5"]


def _stream(events: int, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, list[str]]:
    """Labels growing finer: the first third names level 1 only, the next level 2, then all."""
    generator = torch.Generator().manual_seed(seed)
    labels = []
    for i in range(events):
        known = 3 if i < events // 3 else 7 if i < 2 * events // 3 else len(PATHS)
        labels.append(PATHS[int(torch.randint(known, (1,), generator=generator))])
    centres = {path: torch.randn(*shape, generator=generator) for path in PATHS}
    x = torch.stack([centres[label] + 0.5 * torch.randn(*shape, generator=generator) for label in labels])
    return x, labels


def _digest(value: Any, sha: "hashlib._Hash") -> None:
    if isinstance(value, torch.Tensor):
        sha.update(str((value.dtype, tuple(value.shape))).encode())
        sha.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            sha.update(repr(key).encode())
            _digest(value[key], sha)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _digest(item, sha)
    else:
        sha.update(repr(value).encode())


def fingerprint(config: LearnerConfig) -> dict[str, str]:
    torch.set_num_threads(1)
    result = {}
    for kind, shape, events in (("vectors", (16,), 480), ("images", (3, 12, 12), 240)):
        x, labels = _stream(events, shape, seed=1)
        probe, _ = _stream(64, shape, seed=2)
        learner = HierarchicalLearner(config.with_(memory_size=48, batch_size=8), shape, torch.float32)
        for start in range(0, events, 20):
            learner.predict_then_learn(x[start:start + 20], labels[start:start + 20])
        state = {key: value for key, value in learner.state_dict().items() if key != "config"}
        sha = hashlib.sha256()
        _digest(state, sha)
        result[f"{kind}_state"] = sha.hexdigest()
        sha = hashlib.sha256()
        _digest(learner.predict_proba(probe), sha)
        result[f"{kind}_predictions"] = sha.hexdigest()
    return result


def _configs_here() -> dict[str, dict[str, Any]]:
    """Every name this checkout resolves: the presets and, where present, the former names."""
    from dataclasses import asdict

    try:
        from hle_stream.core.methods import resolve_name
    except ImportError:  # a checkout from before the presets: method names only
        from hle_stream.core.config import METHODS, method_config

        return {name: asdict(method_config(name, LearnerConfig())) for name in METHODS}
    from hle_stream.core.methods import all_names

    return {name: asdict(resolve_name(name)) for name in all_names()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, help="write names, settings and fingerprints here")
    action.add_argument("--check", type=Path, help="compare with a file written by --write")
    parser.add_argument("--only", help="comma-separated names to run")
    args = parser.parse_args()
    here = _configs_here()
    if args.write:
        names = args.only.split(",") if args.only else list(here)
        out = {name: {"config": here[name], "fingerprint": fingerprint(LearnerConfig(**here[name]))} for name in names}
        args.write.write_text(json.dumps(out, indent=1))
        print(f"wrote {len(out)} fingerprints to {args.write}")
        return 0
    before = json.loads(args.check.read_text())
    names = args.only.split(",") if args.only else list(before)
    failures = 0
    for name in names:
        if name not in here:
            print(f"{name}: not resolvable here")
            failures += 1
            continue
        if here[name] != before[name]["config"]:
            diff = {k: (before[name]["config"].get(k), v) for k, v in here[name].items()
                    if before[name]["config"].get(k) != v}
            print(f"{name}: settings differ {diff}")
            failures += 1
            continue
        now = fingerprint(LearnerConfig(**here[name]))
        same = now == before[name]["fingerprint"]
        failures += not same
        print(f"{name}: {'identical' if same else 'DIFFERENT ' + str(now)}")
    print(f"{len(names) - failures} identical, {failures} different")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
