"""How far a single pass over a dataset can go when nothing is continual: a bound for the bench.

The same backbone and optimiser as the learner take one pass over the training set in random
order (every class from the start, no label expansion, no replay, nothing to forget), finest
level only; the test set is scored every ``--eval-period`` samples, and A_auc is the mean of those
accuracies. The same pass is scored with the streaming discriminant fused in (as the default
method does, with the default method's discriminant settings), and with the discriminant alone. A continual learner that reaches these figures
has lost nothing to the stream's order; a target above them asks more of the features than one
pass gives.

    python benchmarks/single_pass_bound.py --dataset 20news --seeds 0,1,2
    python benchmarks/single_pass_bound.py --dataset 20news-text --seeds 0,1,2   # the encoder's features
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from hle_stream.core.backbones import build_backbone
from hle_stream.core.config import LearnerConfig
from hle_stream.core.discriminant import StreamingDiscriminant
from hle_stream.core.inference import scale_inputs
from hle_stream.core.methods import DEFAULT_METHOD, method_config
from hle_stream.eval.datasets import load_dataset
from hle_stream.text.encoder import DEFAULT_MAX_TOKENS, EncoderChoice


def one_pass(x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, classes: int,
             seed: int, eval_period: int, batch: int) -> dict[str, list[float]]:
    """Accuracies (%) of the network, the network × discriminant and the discriminant alone,
    every ``eval_period`` samples of one shuffled pass."""
    config = method_config(DEFAULT_METHOD, LearnerConfig())
    torch.manual_seed(seed)
    is_image = x.dim() == 4
    net = torch.nn.Sequential(backbone := build_backbone("auto", tuple(x.shape[1:])),
                              torch.nn.Linear(backbone.out_dim, classes))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    discriminant = StreamingDiscriminant(int(np.prod(x.shape[1:])), config.discriminant_shrinkage, seed,
                                         config.discriminant_normalise)
    every_class = [torch.arange(classes)]
    test_inputs = scale_inputs(test_x, is_image)
    test_features = discriminant.features(test_inputs)
    scores: dict[str, list[float]] = {"network": [], "fused": [], "discriminant": []}
    order = torch.randperm(len(x))
    for start in range(0, len(x), batch):
        rows = order[start:start + batch]
        inputs = scale_inputs(x[rows], is_image)
        loss = torch.nn.functional.cross_entropy(net(inputs), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        discriminant.update(discriminant.features(inputs), y[rows], y[rows][:, None], classes)
        if (start + batch) // eval_period != start // eval_period:
            net.eval()
            with torch.no_grad():
                network = torch.log_softmax(net(test_inputs), dim=1)
            net.train()
            lda = discriminant.frozen(every_class, copy=False).log_probabilities(test_features)[0]
            fused = network + config.discriminant_weight * lda
            for name, log_p in (("network", network), ("fused", fused), ("discriminant", lda)):
                scores[name].append(100.0 * (log_p.argmax(dim=1) == test_y).float().mean().item())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="20news", help="fashion-mnist, 20news, synthetic-deep, ...")
    parser.add_argument("--data-root", type=Path, default=None, help="folder of the built-in datasets")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-period", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8, help="new samples per step (the learner's stream batch)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder-max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help="a text dataset (20news-text): word pieces the shipped encoder reads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, data_root=args.data_root, encoder=EncoderChoice(max_tokens=args.encoder_max_tokens))
    classes, y = np.unique(data.labels_train, return_inverse=True)
    test_y = torch.from_numpy(np.searchsorted(classes, data.labels_test))
    x, test_x = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        scores = one_pass(x, torch.from_numpy(y), test_x, test_y, len(classes), seed, args.eval_period, args.batch)
        rows.append({name: (statistics.mean(acc), acc[-1]) for name, acc in scores.items()})
        print(f"seed {seed}: " + " | ".join(f"{name} A_auc {a:.1f} last {last:.1f}"
                                           for name, (a, last) in rows[-1].items()), flush=True)
    for name in rows[0]:
        auc = [r[name][0] for r in rows]
        last = [r[name][1] for r in rows]
        print(f"{args.dataset} finest level, {name}: A_auc {statistics.mean(auc):.1f} ± {statistics.pstdev(auc):.1f}, "
              f"last {statistics.mean(last):.1f} ± {statistics.pstdev(last):.1f}")


if __name__ == "__main__":
    main()
