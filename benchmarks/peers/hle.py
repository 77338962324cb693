"""hle-stream's learner (ER, PL-FMS with a bounded importance probe, PL-FMS as the released
code does it, rule for rule, or any other method it offers) with the settings of ``hle-stream bench``'s
``cpu`` preset, fed the stream in chunks as the daemon feeds it."""

from __future__ import annotations

import numpy as np
import torch
from common import Stream, run, worker_arguments, write_result

from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import method_config
from hle_stream.eval.bench.presets import PRESETS

TITLES = {"er": "hle-stream ER", "pl-fms": "hle-stream PL-FMS",
          "pl-fms-reference": "hle-stream PL-FMS as released, rule for rule"}


def main() -> None:
    args = worker_arguments(__doc__)
    stream = Stream(args.stream)
    base = PRESETS["cpu"].learner_config.with_(
        memory_size=stream.memory_size, batch_size=stream.batch_size, online_iter=float(stream.online_iter),
        lr=stream.lr, seed=stream.seed, fms_horizon=2 * len(stream.x), device="cpu")
    learner = HierarchicalLearner(method_config(args.method, base), stream.x.shape[1:], torch.uint8)
    node_of = {name: i for i, name in enumerate(stream.node_names)}
    x_test = torch.from_numpy(stream.x_test)

    def learn(start: int, end: int) -> None:
        learner.observe(torch.from_numpy(stream.x[start:end]), list(stream.labels[start:end]),
                        ids=stream.ids[start:end].tolist())

    def predict(position: int) -> np.ndarray:
        levels = learner.predict(x_test)
        out = np.full((len(x_test), int(stream.node_level.max())), -1, dtype=np.int64)
        for level, guesses in enumerate(levels, start=1):
            names = [learner.tree.path_of(level, int(g)) for g in guesses]
            out[:, level - 1] = [node_of[n] for n in names]
        return out

    write_result(args.out, TITLES.get(args.method, f"hle-stream {args.method}"), run(stream, learn, predict))


if __name__ == "__main__":
    main()
