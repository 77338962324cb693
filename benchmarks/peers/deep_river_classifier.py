"""deep-river 0.3.4's class-incremental ``Classifier`` on the same backbone, fed the bare loop's
batches (the chunk plus rows drawn from the stream so far) through ``learn_many``, one pandas
frame per update as its river API takes them; its output layer grows as classes appear.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from common import Stream, level_predictions, normalise, replay_batches, run, worker_arguments, write_result
from deep_river.classification import Classifier

from hle_stream.core.backbones import build_backbone


class PixelNet(torch.nn.Module):
    """The backbone on flat pixel rows (river features are flat); the last layer is the output
    layer deep-river grows."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.backbone = build_backbone("auto", image_shape)
        self.head = torch.nn.Linear(self.backbone.out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x.view(-1, *self.image_shape)))


def main() -> None:
    args = worker_arguments(__doc__)
    stream = Stream(args.stream)
    torch.manual_seed(stream.seed)
    image_shape = tuple(stream.x.shape[1:])
    pixels = normalise(stream.x).flatten(1).numpy()
    test_frame = pd.DataFrame(normalise(stream.x_test).flatten(1).numpy())
    columns = list(test_frame.columns)
    classifier = Classifier(module=PixelNet(image_shape), loss_fn="cross_entropy", optimizer_fn="adam",
                            lr=stream.lr, is_class_incremental=True, seed=stream.seed)
    rng = np.random.default_rng(stream.seed)

    def learn(start: int, end: int) -> None:
        for rows in replay_batches(stream, start, end, rng):
            classifier.learn_many(pd.DataFrame(pixels[rows], columns=columns), pd.Series(stream.nodes[rows]))

    def predict(position: int) -> np.ndarray:
        proba = classifier.predict_proba_many(test_frame)
        scores = np.full((len(test_frame), stream.num_nodes), -np.inf)
        scores[:, np.asarray(proba.columns, dtype=np.int64)] = proba.to_numpy()
        return level_predictions(scores, stream.known(position), stream.node_level)

    write_result(args.out, "deep-river Classifier", run(stream, learn, predict))


if __name__ == "__main__":
    main()
