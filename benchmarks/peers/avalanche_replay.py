"""Avalanche 0.6.0's online replay: OnlineNaive with a ReplayPlugin over a reservoir buffer,
task-free, on mini-experiences of ``batch_size // 2`` events, as in Avalanche's own
``examples/online_replay.py``. Each update is the stream mini-batch plus as many memory samples.
"""

from __future__ import annotations

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.training import OnlineNaive
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.storage_policy import ReservoirSamplingBuffer
from common import Stream, flat_inputs, predict_flat, run, worker_arguments, write_result


def main() -> None:
    args = worker_arguments(__doc__)
    stream = Stream(args.stream)
    x, y, x_test, model = flat_inputs(stream)
    chunk = stream.chunk
    strategy = OnlineNaive(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=stream.lr, fused=True),
        criterion=torch.nn.CrossEntropyLoss(),
        train_passes=chunk * stream.online_iter,  # online_iter updates per event
        train_mb_size=chunk,
        eval_mb_size=512,
        device="cpu",
        plugins=[ReplayPlugin(mem_size=stream.memory_size, batch_size=chunk,
                              batch_size_mem=stream.batch_size - chunk,
                              storage_policy=ReservoirSamplingBuffer(max_size=stream.memory_size))],
        evaluator=EvaluationPlugin(loggers=[]),
    )

    def learn(start: int, end: int) -> None:
        segment = _make_taskaware_tensor_classification_dataset(x[start:end], y[start:end], task_labels=0)
        experience = benchmark_from_datasets(train=[segment]).train_stream[0]
        strategy.train(split_online_stream([experience], experience_size=chunk, shuffle=False))

    def predict(position: int) -> np.ndarray:
        return predict_flat(model, x_test, stream, position)

    write_result(args.out, "Avalanche online replay", run(stream, learn, predict, per_segment=True))


if __name__ == "__main__":
    main()
