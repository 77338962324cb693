"""HLE streams: the order in which training samples arrive and the level each is labelled at.

Three scenarios from the HLE paper (Lee et al., ICCV 2023), for any hierarchy:

``multi-depth``
    One task per level, coarsest first. Each leaf class's samples are split evenly over the
    D tasks; task t shows its share labelled at level t (or at the leaf, if shallower).
``dual-label`` (2 levels: top → leaf)
    Task 1 shows every sample with its top-level label. The top classes are shuffled and
    split into up to ``max_expansions`` groups; each later task shows the samples of one
    group again, now labelled with their leaf class ("expanding" that group).
``single-label`` (2 levels, every sample once)
    As dual-label, but each leaf class gives 1/T of its samples (T tasks) to task 1 with the
    top label and the rest to its expansion task with the leaf label.

The two single-depth scenarios project the tree onto 2 levels: ``top/leaf`` (the leaf's last
segment). Samples are shuffled inside a task; everything follows ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCENARIOS = ("multi-depth", "dual-label", "single-label")
DEFAULT_MAX_EXPANSIONS = 5


@dataclass
class Task:
    """Stream positions ``start`` (inclusive) to ``end`` (exclusive) and what they teach."""

    start: int
    end: int
    description: str


@dataclass
class HLEStream:
    """``indices[i]`` is the training sample at stream position i, ``labels[i]`` its label path."""

    scenario: str
    seed: int
    indices: np.ndarray
    labels: np.ndarray
    tasks: list[Task] = field(default_factory=list)
    test_labels_map: dict[str, str] | None = None  # single-depth: full leaf path -> projected path

    def __len__(self) -> int:
        return len(self.indices)

    def schedule(self) -> list[str]:
        return [f"task {i + 1} [{t.start}, {t.end}): {t.description}" for i, t in enumerate(self.tasks)]


def _segments(path: str) -> list[str]:
    return path.split("/")


def two_level_projection(leaf_paths: np.ndarray) -> dict[str, str]:
    """Map each leaf path to ``top/leaf``, keeping the full tail where the last segment repeats."""
    unique = sorted(set(leaf_paths.tolist()))
    short = {p: f"{_segments(p)[0]}/{_segments(p)[-1]}" for p in unique}
    clashes = {v for v in short.values() if list(short.values()).count(v) > 1}
    return {p: (f"{_segments(p)[0]}/{'.'.join(_segments(p)[1:])}" if short[p] in clashes else short[p])
            for p in unique}


def _by_class(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Shuffled sample indices of each leaf class, classes in sorted order."""
    return {c: rng.permutation(np.flatnonzero(labels == c)) for c in sorted(set(labels.tolist()))}


def _append_task(parts: list, tasks: list[Task], indices: np.ndarray, labels: list[str],
                 description: str, rng: np.random.Generator) -> None:
    order = rng.permutation(len(indices))
    start = sum(len(p[0]) for p in parts)
    parts.append((np.asarray(indices)[order], np.asarray(labels, dtype=object)[order]))
    tasks.append(Task(start, start + len(indices), description))


def build_stream(
    leaf_labels: np.ndarray, scenario: str, seed: int, max_expansions: int = DEFAULT_MAX_EXPANSIONS
) -> HLEStream:
    """The HLE stream over the training samples whose full label paths are ``leaf_labels``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    leaf_labels = np.asarray(leaf_labels).astype(str)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    tasks: list[Task] = []
    projection = None
    if scenario == "multi-depth":
        depth = max(len(_segments(p)) for p in leaf_labels)
        chunks = {c: np.array_split(ix, depth) for c, ix in _by_class(leaf_labels, rng).items()}
        for level in range(1, depth + 1):
            idx = np.concatenate([chunks[c][level - 1] for c in chunks])
            labs = ["/".join(_segments(leaf_labels[i])[:level]) for i in idx]
            _append_task(parts, tasks, idx, labs, f"level {level}, {len(set(labs))} classes", rng)
    else:
        projection = two_level_projection(leaf_labels)
        if max(len(_segments(p)) for p in projection.values()) < 2:
            raise ValueError("single-depth scenarios need labels of at least 2 levels")
        by_class = _by_class(leaf_labels, rng)
        tops = sorted({_segments(p)[0] for p in leaf_labels})
        groups = [list(g) for g in np.array_split(rng.permutation(tops), min(len(tops), max_expansions))]
        n_tasks = 1 + len(groups)
        if scenario == "dual-label":
            coarse = {c: ix for c, ix in by_class.items()}
            fine = by_class
        else:
            coarse = {c: ix[: len(ix) // n_tasks] for c, ix in by_class.items()}
            fine = {c: ix[len(ix) // n_tasks:] for c, ix in by_class.items()}
        idx = np.concatenate(list(coarse.values()))
        _append_task(parts, tasks, idx, [_segments(leaf_labels[i])[0] for i in idx],
                     f"level 1, {len(tops)} classes", rng)
        for group in groups:
            classes = [c for c in fine if _segments(c)[0] in group]
            idx = np.concatenate([fine[c] for c in classes])
            _append_task(parts, tasks, idx, [projection[leaf_labels[i]] for i in idx],
                         f"level 2, expands {', '.join(group)} into {len(classes)} classes", rng)
    indices = np.concatenate([p[0] for p in parts]).astype(np.int64)
    labels = np.concatenate([p[1] for p in parts]).astype(str)
    return HLEStream(scenario, seed, indices, labels, tasks, projection)


def stratified_subsample(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` samples, the same share of every class (all if no limit)."""
    labels = np.asarray(labels).astype(str)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    share = limit / len(labels)
    picked = [ix[: max(1, int(round(len(ix) * share)))] for ix in _by_class(labels, rng).values()]
    return np.sort(np.concatenate(picked))
