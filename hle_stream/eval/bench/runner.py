"""One benchmark run: a learner fed an HLE stream, predict-then-learn, evaluated anytime."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import method_config
from hle_stream.eval.bench.presets import Preset
from hle_stream.eval.datasets import HierarchicalDataset
from hle_stream.eval.evaluation import AnytimeEvaluator
from hle_stream.eval.streams import HLEStream, build_stream, stratified_subsample, two_level_projection
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.metrics.served_paths import threshold_curve

ProgressCallback = Callable[[int, int], None]  # (position, stream length)


@dataclass(frozen=True)
class RunSpec:
    scenario: str
    method: str
    seed: int
    label_delay: int = 0  # labels arrive this many events after their samples (0: with them)
    preset: str = ""  # the method's preset when ``method`` is a spec's label (empty: ``method`` itself)
    options: tuple[tuple[str, Any], ...] = ()  # learner options over the preset


def fms_horizon_for(stream: HLEStream) -> int:
    """Z from the paper's code: the stream length, doubled in multi-depth (§2.2)."""
    return len(stream) * (2 if stream.scenario == "multi-depth" else 1)


def prepare_stream(dataset: HierarchicalDataset, preset: Preset, spec: RunSpec) -> tuple[HLEStream, np.ndarray]:
    """The stream over a seeded stratified subsample, and the test labels in its hierarchy."""
    subset = stratified_subsample(dataset.labels_train, preset.train_limit, spec.seed)
    stream = build_stream(dataset.labels_train[subset], spec.scenario, spec.seed)
    stream.indices = subset[stream.indices]
    test_labels = dataset.labels_test
    if stream.test_labels_map is not None:
        mapping = {**two_level_projection(dataset.labels_test), **stream.test_labels_map}
        test_labels = np.array([mapping[p] for p in test_labels])
    return stream, test_labels


class DelayedLabels:
    """Labels that come ``delay`` events after their samples: each batch is predicted (and scored,
    once its label is known, on that prediction) when it arrives, and learned from when its
    labels arrive. Labels due after the stream's end never arrive."""

    def __init__(self, learner: HierarchicalLearner, prequential: PrequentialAccuracy, delay: int) -> None:
        self.learner, self.prequential, self.delay = learner, prequential, delay
        self.waiting: deque[tuple[int, torch.Tensor, list[str], list[int]]] = deque()

    def step(self, position: int, end: int, x: torch.Tensor, labels: list[str], rows: np.ndarray) -> None:
        while self.waiting and self.waiting[0][0] <= position:
            _, old_x, old_labels, old_rows = self.waiting.popleft()
            self.learner.observe(old_x, old_labels, ids=old_rows)
        probabilities = self.learner.predict_proba(x)
        self.prequential.update(self.learner.tree, labels, [p.argmax(dim=1) for p in probabilities])
        self.waiting.append((end + self.delay, x, labels, rows.tolist()))


def run_benchmark(
    dataset: HierarchicalDataset, preset: Preset, spec: RunSpec, progress: ProgressCallback | None = None
) -> dict:
    """Run one (scenario, method, seed); returns the JSON-ready result."""
    stream, test_labels = prepare_stream(dataset, preset, spec)
    test_subset = stratified_subsample(dataset.labels_test, preset.test_limit, 0)
    test_x, test_y = torch.from_numpy(dataset.x_test[test_subset]), list(test_labels[test_subset])
    evaluator = AnytimeEvaluator(test_x, test_y)
    base = preset.learner_config.with_(seed=spec.seed, fms_horizon=fms_horizon_for(stream),
                                       memory_size=preset.memory_size_for(len(stream)))
    if len(dataset.input_shape) == 3:
        base = base.with_(backbone=preset.image_backbone)
    config = method_config(spec.preset or spec.method, base, dict(spec.options))
    learner = HierarchicalLearner(config, dataset.input_shape, torch.as_tensor(dataset.x_train[:1]).dtype)
    prequential = PrequentialAccuracy()

    boundaries = sorted({*range(preset.eval_period, len(stream) + 1, preset.eval_period), *(t.end for t in stream.tasks)})
    task_ends = {t.end for t in stream.tasks}
    learn_seconds = 0.0
    delayed = DelayedLabels(learner, prequential, spec.label_delay)
    started = time.perf_counter()
    position = 0
    for boundary in boundaries:
        while position < boundary:
            end = min(position + config.stream_batch_size, boundary)
            rows = stream.indices[position:end]
            x = torch.as_tensor(dataset.x_train[rows])
            labels = list(stream.labels[position:end])
            tick = time.perf_counter()
            if spec.label_delay:
                delayed.step(position, end, x, labels, rows)
            else:
                learner.predict_then_learn(x, labels, ids=rows.tolist(), on_predicted=lambda probabilities: (
                    prequential.update(learner.tree, labels, [p.argmax(dim=1) for p in probabilities])))
            learn_seconds += time.perf_counter() - tick
            position = end
        if boundary % preset.eval_period == 0:
            evaluator.evaluate(learner, position)
        if boundary in task_ends:
            evaluator.evaluate(learner, position, task_end=True)
        if progress:
            progress(position, len(stream))
    wall = time.perf_counter() - started
    served_paths = threshold_curve(learner.tree, learner.predict_proba(test_x), test_y)

    return {
        "scenario": spec.scenario,
        "method": spec.method,
        "seed": spec.seed,
        "levels": {str(level): row for level, row in evaluator.summary().items()},
        "prequential": {str(k): v for k, v in prequential.running_accuracy().items()},
        "curve": [{"position": q.position, "accuracy": {str(k): v for k, v in q.accuracy.items()}}
                  for q in evaluator.queries if not q.task_end],
        "tasks": stream.schedule(),
        "task_ends": sorted(task_ends),
        "events": len(stream),
        "label_delay": spec.label_delay,
        "train_steps": learner.steps,
        "learn_seconds": learn_seconds,
        "wall_seconds": wall,
        "events_per_second": len(stream) / learn_seconds if learn_seconds else float("nan"),
        "served_paths": served_paths,
        "memory_composition": {str(k): v for k, v in learner.stats().memory_per_level.items()},
        "config": {k: v for k, v in vars(config).items()},
    }
