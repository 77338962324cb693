"""Side by side with the peers: the same Fashion-MNIST HLE stream, backbone, batch size, memory
size and updates per event, learned by hle-stream's default method, ER and PL-FMS, Avalanche's online replay,
deep-river's class-incremental Classifier and a bare PyTorch loop.

One command runs everything and writes a markdown table (and the raw JSON)::

    python benchmarks/peer_benchmark.py            # ~25 min on 2 CPU cores

Each peer pins its own torch, so Avalanche and deep-river run in their own virtualenvs under
``.peer-venvs/``, created from ``benchmarks/peers/requirements-*.txt`` on first use (several GB:
Avalanche needs torchvision, deep-river pins torch 2.5.1). The bare loop also runs under each
peer's torch, so a difference of torch versions can be told from a difference of frameworks.
Every worker runs alone, in its own process (its peak RSS is its own), with the same number of
torch threads; all are scored by the same code here: A_auc is the mean of the per-level test
accuracy over the periodic evaluations, A_last the last one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from dataclasses import replace
from pathlib import Path

import numpy as np

from hle_stream.core.hierarchy import LabelTree
from hle_stream.core.methods import DEFAULT_METHOD
from hle_stream.eval.bench.presets import PRESETS
from hle_stream.eval.bench.runner import RunSpec, prepare_stream
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.streams import stratified_subsample

ROOT = Path(__file__).resolve().parents[1]
WORKERS = ROOT / "benchmarks" / "peers"
# (key, worker script, --method, virtualenv or None for this interpreter)
METHODS = [
    ("hle-default", "hle.py", DEFAULT_METHOD, None),
    ("hle-pl-fms", "hle.py", "pl-fms", None),
    ("hle-pl-fms-reference", "hle.py", "pl-fms-reference", None),
    ("hle-er", "hle.py", "er", None),
    ("bare", "bare_loop.py", "", None),
    ("bare-channels-last", "bare_loop.py", "channels-last", None),
    ("avalanche", "avalanche_replay.py", "", "avalanche"),
    ("bare@avalanche", "bare_loop.py", "", "avalanche"),
    ("bare@deep-river", "bare_loop.py", "", "deep-river"),
    ("deep-river", "deep_river_classifier.py", "", "deep-river"),
]
REFERENCE = "hle-pl-fms"


def peer_python(name: str, venvs: Path) -> Path:
    """The interpreter of peer ``name``'s virtualenv, created and filled on first use."""
    python = venvs / name / "bin" / "python"
    if not python.exists():
        print(f"creating {venvs / name} (first use: several GB, some minutes)", flush=True)
        venv.create(venvs / name, with_pip=True)
        requirements = WORKERS / f"requirements-{name}.txt"
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    return python


def write_stream(path: Path, events: int, test_size: int, eval_period: int, seed: int, data_root: Path | None) -> None:
    """The `cpu` preset's multi-depth stream and test subset, with every label as a flat node."""
    dataset = load_dataset("fashion-mnist", data_root=data_root)
    preset = replace(PRESETS["cpu"], train_limit=events, test_limit=test_size, eval_period=eval_period)
    stream, test_labels = prepare_stream(dataset, preset, RunSpec("multi-depth", "peers", seed))
    tree, first_seen = LabelTree(), []
    for position, label in enumerate(stream.labels):
        first_seen += [position] * len(tree.add(label))
    names = [tree.path_of(level, index) for level in range(1, tree.depth + 1) for index in range(tree.num_classes(level))]
    names.sort(key=tree.global_id)
    node_of = {name: i for i, name in enumerate(names)}
    test_rows = stratified_subsample(dataset.labels_test, test_size, 0)
    test_nodes = np.array([[node_of.get("/".join(str(test_labels[row]).split("/")[:level]), -1)
                            for level in range(1, tree.depth + 1)] for row in test_rows])
    settings = preset.learner_config
    np.savez(
        path,
        x_stream=dataset.x_train[stream.indices], stream_ids=stream.indices,
        stream_labels=np.array(stream.labels), stream_nodes=np.array([node_of[str(p)] for p in stream.labels]),
        node_names=np.array(names), node_level=np.array([tree.locate(n)[0] for n in names]),
        node_first_seen=np.array([first_seen[tree.global_id(n)] for n in names]),
        x_test=dataset.x_test[test_rows], test_nodes=test_nodes,
        eval_positions=np.arange(eval_period, len(stream) + 1, eval_period),
        batch_size=settings.batch_size, memory_size=settings.memory_size, online_iter=int(settings.online_iter),
        lr=settings.lr, seed=seed,
    )


def score(result: dict, stream: np.lib.npyio.NpzFile) -> dict[int, dict[str, float]]:
    """Per level: A_auc (mean over the evaluations) and A_last, over test samples whose class
    at that level was known at the time."""
    truth, first_seen = stream["test_nodes"], stream["node_first_seen"]
    curves: dict[int, list[float]] = {}
    for position, rows in sorted(result["predictions"].items(), key=lambda kv: int(kv[0])):
        guesses = np.array(rows)
        for level in range(1, truth.shape[1] + 1):
            nodes = truth[:, level - 1]
            known = (nodes >= 0) & (first_seen[np.maximum(nodes, 0)] < int(position))
            if known.any():
                curves.setdefault(level, []).append(float((guesses[known, level - 1] == nodes[known]).mean()))
    return {level: {"a_auc": float(np.mean(c)), "a_last": c[-1]} for level, c in curves.items()}


def markdown(rows: list[dict], levels: list[int]) -> str:
    reference = next((r for r in rows if r["key"] == REFERENCE), None)
    head = ["method", "torch", "events/s", "PL-FMS ÷ it", "wall s", "peak RSS MB"]
    head += [f"L{lv} A_auc / A_last" for lv in levels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = reference["events_per_second"] / r["events_per_second"] if reference else float("nan")
        cells = [r["method"], r["torch"], f"{r['events_per_second']:.1f}", f"{ratio:.2f}",
                 f"{r['wall_seconds']:.0f}", f"{r['peak_rss_mb']:.0f}"]
        cells += [f"{100 * r['levels'][lv]['a_auc']:.1f} / {100 * r['levels'][lv]['a_last']:.1f}"
                  if lv in r["levels"] else "–" for lv in levels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=12000, help="stream length (stratified subsample)")
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--eval-period", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every worker")
    parser.add_argument("--methods", default=",".join(m[0] for m in METHODS))
    parser.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    parser.add_argument("--venvs", type=Path, default=ROOT / ".peer-venvs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "peers")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    stream_file = args.out / "stream.npz"
    write_stream(stream_file, args.events, args.test_size, args.eval_period, args.seed, args.data_root)
    stream = np.load(stream_file)
    chosen = args.methods.split(",")
    rows = []
    for key, script, method, env in METHODS:
        if key not in chosen:
            continue
        python = peer_python(env, args.venvs) if env else Path(sys.executable)
        out = args.out / f"{key}.json"
        log = args.out / f"{key}.log"
        print(f"running {key} (log: {log}) ...", flush=True)
        with log.open("w") as stderr:  # Avalanche warns on every experience; keep it out of the table
            done = subprocess.run([str(python), str(WORKERS / script), "--stream", str(stream_file), "--out", str(out),
                                   "--method", method, "--threads", str(args.threads)], stderr=stderr)
        if done.returncode != 0:
            sys.exit(f"{key} failed (exit {done.returncode}):\n" + "\n".join(log.read_text().splitlines()[-20:]))
        result = json.loads(out.read_text())
        row = {"key": key, **{k: v for k, v in result.items() if k != "predictions"}, "levels": score(result, stream)}
        if env:
            row["method"] += f" ({env} venv)" if key.startswith("bare") else ""
        rows.append(row)
        print(f"  {row['method']}: {row['events_per_second']:.1f} events/s, peak RSS {row['peak_rss_mb']:.0f} MB, "
              + ", ".join(f"L{lv} A_auc {100 * s['a_auc']:.1f}" for lv, s in row["levels"].items()), flush=True)
    levels = sorted({lv for r in rows for lv in r["levels"]})
    table = markdown(rows, levels)
    (args.out / "peers.md").write_text(table + "\n")
    (args.out / "peers.json").write_text(json.dumps(rows, indent=1))
    print(table)


if __name__ == "__main__":
    main()
