"""The dual-label scenario as refinements: the daemon's processing core against the benchmark.

``hle-stream bench --scenario dual-label`` shows every sample first with its top-level label, then
(one group of top classes per task) the same samples again, features and all, with their leaf
label. A real stream sends the refinement as a label event instead: ``{"id", "label"}``, no
features, which the daemon joins with the features it kept (upgrading the sample in its replay
memory, or training on it again when the memory no longer holds it). This script feeds that
stream, in the benchmark's order and micro-batches, through ``MicroBatchProcessor`` (what the
daemon runs between a poll and a checkpoint; no Kafka, the budget unlimited) and evaluates its
learner on the test set at the benchmark's boundaries; then runs the benchmark itself on the same
data, preset, method and seed. It prints A_auc and A_last per level of both.

    python benchmarks/refinement.py --dataset fashion-mnist --preset cpu --method pl-fms --seed 0 \
        [--refinements upgrade]
"""

from __future__ import annotations

import argparse
import json

import torch

from connectors.memory import ListSink, RawRecord
from hle_stream.contract import encode_features
from hle_stream.eval.bench.presets import PRESETS
from hle_stream.eval.bench.runner import RunSpec, fms_horizon_for, prepare_stream, run_benchmark
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.evaluation import AnytimeEvaluator
from hle_stream.eval.streams import stratified_subsample
from hle_stream.service.config import REFINEMENTS, ProcessingConfig
from hle_stream.service.processing import MicroBatchProcessor


def through_the_daemon(dataset, preset, method: str, seed: int, refinements: str = "relearn") -> tuple[dict, dict]:
    spec = RunSpec("dual-label", method, seed)
    stream, test_labels = prepare_stream(dataset, preset, spec)
    test_subset = stratified_subsample(dataset.labels_test, preset.test_limit, 0)
    evaluator = AnytimeEvaluator(torch.from_numpy(dataset.x_test[test_subset]), list(test_labels[test_subset]))
    learner_config = preset.learner_config.with_(seed=seed, fms_horizon=fms_horizon_for(stream))
    if len(dataset.input_shape) == 3:
        learner_config = learner_config.with_(backbone=preset.image_backbone)
    processor = MicroBatchProcessor(ProcessingConfig(method=method, learner_config=learner_config,
                                                     join_window=len(stream), join_max_age_seconds=1e9,
                                                     dedupe_window=0, refinements=refinements))
    sink = ListSink()
    seen_rows: set[int] = set()

    def record(position: int) -> RawRecord:
        row, label = int(stream.indices[position]), str(stream.labels[position])
        if row in seen_rows:  # the sample again, with its finer label: a label event
            document = {"id": f"s{row}", "label": label}
        else:
            seen_rows.add(row)
            document = {"id": f"s{row}", "label": label, **encode_features(dataset.x_train[row])}
        return RawRecord("events", 0, position, json.dumps(document).encode())

    boundaries = sorted({*range(preset.eval_period, len(stream) + 1, preset.eval_period), *(t.end for t in stream.tasks)})
    task_ends = {t.end for t in stream.tasks}
    position, batch = 0, learner_config.stream_batch_size
    for boundary in boundaries:
        while position < boundary:
            end = min(position + batch, boundary)
            processor.process([record(p) for p in range(position, end)], sink)
            position = end
        if boundary % preset.eval_period == 0:
            evaluator.evaluate(processor.learner, position)
        if boundary in task_ends:
            evaluator.evaluate(processor.learner, position, task_end=True)
    return evaluator.summary(), dict(processor.label_outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--method", default="pl-fms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refinements", choices=REFINEMENTS, default="relearn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.dataset)
    preset = PRESETS[args.preset]
    daemon, outcomes = through_the_daemon(dataset, preset, args.method, args.seed, args.refinements)
    bench = run_benchmark(dataset, preset, RunSpec("dual-label", args.method, args.seed))["levels"]
    print(f"{args.dataset} · dual-label · preset {args.preset} · {args.method} · seed {args.seed} · "
          f"--refinements {args.refinements}; "
          f"label events: {outcomes}")
    print("| level | bench A_auc | refinements A_auc | bench A_last | refinements A_last |")
    print("|---|---|---|---|---|")
    for level, row in sorted(daemon.items()):
        theirs = bench[str(level)] if str(level) in bench else bench[level]
        print(f"| {level} | {100 * theirs['a_auc']:.1f} | {100 * row['a_auc']:.1f} | {100 * theirs['a_last']:.1f} | "
              f"{100 * row['a_last']:.1f} |")


if __name__ == "__main__":
    main()
