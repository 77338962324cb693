"""What every peer worker shares: the stream file, the flat model, the batch schedule, the report.

Workers run in different virtualenvs (each peer pins its own torch), so this module needs only
numpy and torch; the backbone comes from ``hle_stream.core.backbones``, which imports nothing else.
A worker reads the stream the orchestrator wrote, learns it in chunks of ``batch_size // 2``
events, predicts the test set at the orchestrator's positions and writes a JSON result; the
orchestrator scores every method with the same code.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from hle_stream.core.backbones import build_backbone  # noqa: E402


class Stream:
    """The arrays of ``stream.npz`` (written by ``benchmarks/peer_benchmark.py``)."""

    def __init__(self, path: Path) -> None:
        data = np.load(path, allow_pickle=False)
        self.x = data["x_stream"]  # uint8 (N, 1, 28, 28), in stream order
        self.nodes = data["stream_nodes"]  # flat node id of each event's label
        self.labels = data["stream_labels"]  # label paths, for hierarchy-aware learners
        self.ids = data["stream_ids"]
        self.node_names = [str(n) for n in data["node_names"]]
        self.node_level = data["node_level"]
        self.x_test = data["x_test"]
        self.node_first_seen = data["node_first_seen"]  # position after which a node is known
        self.eval_positions = [int(p) for p in data["eval_positions"]]
        self.batch_size = int(data["batch_size"])
        self.memory_size = int(data["memory_size"])
        self.online_iter = int(data["online_iter"])
        self.lr = float(data["lr"])
        self.seed = int(data["seed"])

    @property
    def chunk(self) -> int:
        return max(1, self.batch_size // 2)

    @property
    def num_nodes(self) -> int:
        return len(self.node_level)

    def known(self, position: int) -> np.ndarray:
        """Which nodes the first ``position`` events named (as a label or a label's prefix)."""
        return self.node_first_seen < position


def normalise(x: np.ndarray) -> torch.Tensor:
    """uint8 images to floats in [-1, 1], as hle-stream's learner does on the fly."""
    return (torch.from_numpy(x).float() / 255.0 - 0.5) / 0.5


class FlatNet(torch.nn.Module):
    """hle-stream's backbone with one linear output over every node of the tree (all levels)."""

    def __init__(self, input_shape: tuple[int, ...], outputs: int) -> None:
        super().__init__()
        self.backbone = build_backbone("auto", input_shape)
        self.head = torch.nn.Linear(self.backbone.out_dim, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def replay_batches(stream: Stream, start: int, end: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The rows of each update for the chunk ``start:end``: the chunk itself plus rows drawn
    uniformly from the stream so far up to ``batch_size`` (no memory is kept), ``online_iter``
    updates per event."""
    new = np.arange(start, end)
    for _ in range(new.size * stream.online_iter):
        yield np.concatenate([new, rng.integers(0, end, size=stream.batch_size - new.size)])


def flat_inputs(stream: Stream) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, FlatNet]:
    """For the flat-model workers, seeded: the normalised stream images, their node ids, the
    normalised test images and a fresh ``FlatNet``."""
    torch.manual_seed(stream.seed)
    x = normalise(stream.x)
    return x, torch.from_numpy(stream.nodes), normalise(stream.x_test), FlatNet(tuple(x.shape[1:]), stream.num_nodes)


def predict_flat(model: torch.nn.Module, x_test: torch.Tensor, stream: Stream, position: int) -> np.ndarray:
    """A flat model's per-level predictions on the test set, among the nodes known at ``position``."""
    return level_predictions(flat_logits(model, x_test).numpy(), stream.known(position), stream.node_level)


@torch.no_grad()
def flat_logits(model: torch.nn.Module, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """The model's outputs in eval mode, in chunks; training mode is restored."""
    model.eval()
    logits = torch.cat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    model.train()
    return logits


def level_predictions(scores: np.ndarray, known: np.ndarray, node_level: np.ndarray) -> np.ndarray:
    """Per level, the known node of that level with the highest score (-1 when none is known)."""
    out = np.full((scores.shape[0], int(node_level.max())), -1, dtype=np.int64)
    for level in range(1, out.shape[1] + 1):
        candidates = np.flatnonzero(known & (node_level == level))
        if candidates.size:
            out[:, level - 1] = candidates[scores[:, candidates].argmax(axis=1)]
    return out


def run(
    stream: Stream,
    learn: Callable[[int, int], None],
    predict: Callable[[int], np.ndarray],
    per_segment: bool = False,
) -> dict:
    """Feed ``learn(start, end)`` one chunk at a time, or with ``per_segment`` everything up to
    the next eval position at once (timed); ``predict(position)`` the test set at each eval
    position (untimed). Returns the timings, the peak RSS and the predictions."""
    learn_seconds = 0.0
    predictions: dict[str, list] = {}
    step = None if per_segment else stream.chunk
    ends = sorted({*stream.eval_positions, *(range(step, len(stream.x) + 1, step) if step else [])})
    started = time.perf_counter()
    start = 0
    for end in ends:
        tick = time.perf_counter()
        learn(start, end)
        learn_seconds += time.perf_counter() - tick
        start = end
        if end in stream.eval_positions:
            predictions[str(end)] = predict(end).tolist()
    return {
        "events": len(stream.x),
        "learn_seconds": learn_seconds,
        "wall_seconds": time.perf_counter() - started,
        "events_per_second": len(stream.x) / learn_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        "predictions": predictions,
    }


def worker_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--stream", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default="")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def write_result(path: Path, name: str, result: dict) -> None:
    path.write_text(json.dumps({"method": name, **result}))
