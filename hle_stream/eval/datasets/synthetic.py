"""A synthetic hierarchy of Gaussian clusters: fast, and as deep or wide as a test needs.

Every node's centre is its parent's centre plus a random offset that shrinks with depth, so
siblings are closer to each other than to cousins, as in a real taxonomy.
"""

from __future__ import annotations

import numpy as np

from hle_stream.eval.datasets.base import HierarchicalDataset


def make_synthetic(
    branching: tuple[int, ...] = (3, 2, 2),
    dim: int = 32,
    train_per_leaf: int = 300,
    test_per_leaf: int = 100,
    noise: float = 2.0,
    seed: int = 0,
    name: str = "synthetic",
) -> HierarchicalDataset:
    """``branching[i]`` children per node at depth ``i``; leaves are at depth ``len(branching)``."""
    rng = np.random.default_rng(seed)
    # (path, last segment, centre); a child of segment "n0" is "n0.1", so names stay unique.
    leaves: list[tuple[str, str, np.ndarray]] = [("", "n", np.zeros(dim))]
    for depth, width in enumerate(branching):
        scale = 4.0 / (depth + 1)
        next_leaves = []
        for path, name, centre in leaves:
            for i in range(width):
                child = f"{name}{i}" if depth == 0 else f"{name}.{i}"
                next_leaves.append((f"{path}/{child}" if path else child, child, centre + rng.normal(0, scale, dim)))
        leaves = next_leaves
    parts = {"train": ([], []), "test": ([], [])}
    for path, _, centre in leaves:
        for split, count in (("train", train_per_leaf), ("test", test_per_leaf)):
            parts[split][0].append(centre + rng.normal(0, noise, (count, dim)))
            parts[split][1].extend([path] * count)
    return HierarchicalDataset(
        name,
        np.concatenate(parts["train"][0]).astype(np.float32), np.array(parts["train"][1]),
        np.concatenate(parts["test"][0]).astype(np.float32), np.array(parts["test"][1]),
    )


def make_synthetic_deep() -> HierarchicalDataset:
    """A taxonomy-like tree, 2 → 4 → 8 → 16 → 96 classes over five levels, 250 training
    samples per leaf (a 24,000-event stream): many fine classes, where a memory balanced over
    (level, class) bins should pay off."""
    return make_synthetic(branching=(2, 2, 2, 2, 6), dim=64, train_per_leaf=250, test_per_leaf=50, seed=0,
                          name="synthetic-deep")
