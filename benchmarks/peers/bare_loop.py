"""The limit: only forward, backward and step of the same batches, no memory, no metrics.

``--method channels-last`` runs the same loop with NHWC tensors, as hle-stream's learner does
for images, so its gain is not counted as the learner's own.
"""

from __future__ import annotations

import numpy as np
import torch
from common import Stream, flat_inputs, predict_flat, replay_batches, run, worker_arguments, write_result


def main() -> None:
    args = worker_arguments(__doc__)
    stream = Stream(args.stream)
    x, y, x_test, model = flat_inputs(stream)
    title = "bare PyTorch loop"
    if args.method == "channels-last":
        model = model.to(memory_format=torch.channels_last)
        x, x_test = (t.contiguous(memory_format=torch.channels_last) for t in (x, x_test))
        title += ", channels_last"
    optimizer = torch.optim.Adam(model.parameters(), lr=stream.lr, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(stream.seed)

    def learn(start: int, end: int) -> None:
        for rows in replay_batches(stream, start, end, rng):
            index = torch.from_numpy(rows)
            loss = loss_fn(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def predict(position: int) -> np.ndarray:
        return predict_flat(model, x_test, stream, position)

    write_result(args.out, title, run(stream, learn, predict))


if __name__ == "__main__":
    main()
