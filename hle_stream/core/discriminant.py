"""Streaming linear discriminant analysis over the raw inputs: a second opinion that cannot forget.

The network learns from every stream sample once and from a small replay memory after that;
the discriminant keeps, for every class of every level, the running mean of *all* samples whose
label path names it (a fine sample counts for its ancestors too), and one within-class
covariance shared by all classes. Its scores are linear in the input (``wᵀx + b``, with
``w = Σ⁻¹μ`` and ``b = -½ μᵀΣ⁻¹μ``) and equal class priors, so a class that has not been seen for
a while keeps its mean: nothing is overwritten, and a single pass over the data is enough.
At prediction the learner adds ``weight × log p_lda`` to its per-level log-probabilities.

Inputs wider than ``MAX_FEATURES`` go through a fixed random projection first, so that the
covariance stays small (``MAX_FEATURES²`` floats) and its inverse cheap. Rows may be scaled to
unit length first (``normalise``): on TF-IDF text features that is worth 2-3 points, since a
post's direction says its topic and its length mostly how long it is.

Levels are scored flat (a softmax over each level's classes) or along the tree (``parents``):
a class's log-probability is its parent's plus its share among its siblings. Along the tree, a
fine class whose parent has no siblings to split from is as sure as its parent, whose mean rests
on every sample of the finer levels too, instead of on the few fine labels seen so far.

Statistics, inverse and scores are float64: float32 inputs of any finite size give finite scores. A mean has no defence
against an absurd value (1e30 in a feature), so rows far outside what came before are left out
of the statistics and counted (``rejected``); the network keeps learning from them. Unit-length
rows are never outliers: an absurd event is one more direction.
"""

from __future__ import annotations

import math
from typing import Any

import torch

MAX_FEATURES = 1024
REFRESH_GROWTH = 0.05  # re-invert the covariance once the samples behind it grew by 5 % ...
REFRESH_MIN = 64  # ... or by 64 samples, whichever is more
OUTLIER_FACTOR = 1e4  # a row whose squared norm exceeds this many times the mean of the rows so far ...
OUTLIER_WARMUP = 64  # ... (once that many were taken) is left out: one absurd event cannot poison a mean


class Projection:
    """Scaled inputs (``hle_stream.core.inference.scale_inputs``) to the discriminant's features,
    float32 on the host: flattened, and through a fixed Gaussian random projection to
    ``MAX_FEATURES`` features when wider, and scaled to unit length if ``normalise``. Built once
    from ``seed`` (never stored) and shared by a discriminant and every frozen copy of it."""

    def __init__(self, input_dim: int, seed: int, normalise: bool = False) -> None:
        self.input_dim, self.seed, self.normalise = input_dim, seed, normalise
        self.dim = min(input_dim, MAX_FEATURES)
        self.matrix: torch.Tensor | None = None
        if input_dim > MAX_FEATURES:
            generator = torch.Generator().manual_seed(seed)
            self.matrix = torch.randn(input_dim, MAX_FEATURES, generator=generator) / math.sqrt(MAX_FEATURES)

    def __call__(self, prepared: torch.Tensor) -> torch.Tensor:
        flat = prepared.detach().float().cpu().reshape(prepared.shape[0], -1)
        projected = flat if self.matrix is None else flat @ self.matrix
        if not self.normalise:
            return projected
        wide = projected.double()  # float32 squares of large features would overflow
        return (wide / wide.norm(dim=1, keepdim=True).clamp(min=1e-300)).float()


class LinearDiscriminant:
    """The discriminant frozen at one moment: a weight row and a bias per class (global id), and
    which classes make up each level, and, to score along the tree, each class's parent index
    (``parents[h]`` for level ``h + 1``, as ``TreeTables.parents``). What a serving snapshot
    carries; ``log_probabilities`` is all prediction needs."""

    def __init__(self, weights: torch.Tensor, biases: torch.Tensor, known: torch.Tensor,
                 level_class_ids: list[torch.Tensor], features: Projection,
                 parents: list[torch.Tensor] | None = None) -> None:
        self.weights, self.biases, self.known = weights, biases, known
        self.level_class_ids = level_class_ids
        self.features = features
        self.parents = parents

    def log_probabilities(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per level, log-probabilities over its classes, flat or along the tree; a class without
        statistics yet (named only by a relabel) gets the uniform share of the classes (siblings,
        along the tree) that have some."""
        scores = features.double() @ self.weights.T + self.biases
        out: list[torch.Tensor] = []
        for level, ids in enumerate(self.level_class_ids):
            level_scores, known = scores[:, ids], self.known[ids]
            if self.parents is None or level == 0:
                log_p = torch.log_softmax(level_scores.masked_fill(~known, float("-inf")), dim=1)
                uniform = -math.log(max(int(known.sum()), 1))
                out.append(torch.where(known, log_p, torch.full_like(log_p, uniform)).float())
            else:
                parents = self.parents[level].cpu()
                shares = _sibling_log_softmax(level_scores, known, parents)
                out.append((shares + out[level - 1].double()[:, parents]).float())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "biases": self.biases, "known": self.known,
                "level_class_ids": self.level_class_ids, "projection_seed": self.features.seed,
                "input_dim": self.features.input_dim, "normalise": self.features.normalise,
                "parents": self.parents}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "LinearDiscriminant":
        """Also reads snapshots from before rows could be normalised and levels scored along the tree."""
        features = Projection(int(state["input_dim"]), int(state["projection_seed"]), bool(state.get("normalise", False)))
        parents = state.get("parents")
        return cls(state["weights"], state["biases"], state["known"], list(state["level_class_ids"]), features,
                   None if parents is None else list(parents))


def _sibling_log_softmax(scores: torch.Tensor, known: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Log-softmax of ``scores`` (rows × classes) within each group of siblings (``groups[c]``:
    the parent of class ``c``), over the ``known`` classes; an unknown class gets the uniform share
    of its group's known classes (of the whole group when none is known)."""
    n_groups = int(groups.max()) + 1 if groups.numel() else 0
    masked = scores.masked_fill(~known, float("-inf"))
    peak = torch.full((scores.shape[0], n_groups), float("-inf"), dtype=scores.dtype)
    peak = peak.scatter_reduce(1, groups.expand_as(scores), masked, reduce="amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    mass = torch.zeros_like(peak).index_add_(1, groups, torch.exp(masked - peak[:, groups]))
    shares = masked - peak[:, groups] - torch.log(mass[:, groups])
    known_in_group = torch.zeros(n_groups, dtype=scores.dtype).index_add_(0, groups, known.to(scores.dtype))
    size = torch.zeros(n_groups, dtype=scores.dtype).index_add_(0, groups, torch.ones_like(known, dtype=scores.dtype))
    uniform = -torch.log(torch.where(known_in_group > 0, known_in_group, size))[groups]
    return torch.where(known, shares, uniform.expand_as(shares))


class StreamingDiscriminant:
    """Class means and a shared within-class covariance, updated one stream batch at a time.

    Statistics are indexed by the label tree's global class id and accumulated in float64 (a
    long stream's sums lose nothing); the covariance's inverse is refreshed as it grows (see
    ``REFRESH_GROWTH``) and shrunk toward a multiple of the identity by ``shrinkage``, so it is
    usable from the first samples on (no samples yet: nearest class mean). A class's weight row
    is recomputed only when its mean moved or the inverse was refreshed: a prediction costs one
    matrix product over the classes, not one per class and feature pair.
    """

    def __init__(self, input_dim: int, shrinkage: float, seed: int, normalise: bool = False) -> None:
        self.features = Projection(input_dim, seed, normalise)
        self.dim = self.features.dim
        self.shrinkage = shrinkage
        self.counts = torch.zeros(0, dtype=torch.float64)
        self.sums = torch.zeros(0, self.dim, dtype=torch.float64)
        self.scatter = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        self.scattered = 0  # samples behind ``scatter``
        self.precision: torch.Tensor | None = None
        self.precision_at = 0  # ``scattered`` when ``precision`` was computed
        self.weights = torch.zeros(0, self.dim, dtype=torch.float64)  # per class: precision @ mean, and its bias
        self.biases = torch.zeros(0, dtype=torch.float64)
        self.stale = torch.zeros(0, dtype=torch.bool)  # classes whose weight row is out of date
        self.taken = 0  # rows in the statistics, and the sum of their squared norms (the outlier yardstick)
        self.taken_square_norm = 0.0
        self.rejected = 0  # rows left out as outliers

    def _grow(self, total_classes: int) -> None:
        missing = total_classes - self.counts.numel()
        if missing > 0:
            self.counts = torch.cat([self.counts, torch.zeros(missing, dtype=torch.float64)])
            self.sums = torch.cat([self.sums, torch.zeros(missing, self.dim, dtype=torch.float64)])
            self.weights = torch.cat([self.weights, torch.zeros(missing, self.dim, dtype=torch.float64)])
            self.biases = torch.cat([self.biases, torch.zeros(missing, dtype=torch.float64)])
            self.stale = torch.cat([self.stale, torch.zeros(missing, dtype=torch.bool)])

    def update(self, features: torch.Tensor, own: torch.Tensor, paths: torch.Tensor, total_classes: int) -> None:
        """Learn from ``features`` (rows) whose labels are global class ``own`` with ancestors
        ``paths`` (global ids per row, ``-1`` padded, ``own`` included).

        The covariance takes each row's deviation from its own class's mean as it was before the
        batch, weighted ``n / (n + 1)`` (Welford's update, batched: the rows of a class's first
        batch add nothing). Outliers are dropped first (``OUTLIER_FACTOR``)."""
        self._grow(total_classes)
        x = features.double()
        keep = self._ordinary(x)
        if not bool(keep.all()):
            x, own, paths = x[keep], own[keep], paths[keep]
        n = self.counts[own]
        deviation = x - self.sums[own] / n.clamp(min=1.0)[:, None]
        weight = n / (n + 1.0)
        self.scatter += (deviation * weight[:, None]).T @ deviation
        self.scattered += int((n > 0).sum())
        self._accumulate(x, paths)

    def _ordinary(self, x: torch.Tensor) -> torch.Tensor:
        """Which rows are within ``OUTLIER_FACTOR`` of the mean squared norm so far; counts the rest."""
        square_norm = (x * x).sum(dim=1)
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        if self.taken >= OUTLIER_WARMUP:
            keep = square_norm <= OUTLIER_FACTOR * max(self.taken_square_norm / self.taken, 1e-12)
        self.rejected += int((~keep).sum())
        self.taken += int(keep.sum())
        self.taken_square_norm += float(square_norm[keep].sum())
        return keep

    def add(self, features: torch.Tensor, paths: torch.Tensor) -> None:
        """Count ``features`` toward the class means of ``paths`` only (a relabelled memory
        sample toward its finer classes), leaving the covariance alone."""
        x = features.double()
        keep = self._ordinary(x)
        self._accumulate(x[keep], paths[keep])

    def _accumulate(self, x: torch.Tensor, paths: torch.Tensor) -> None:
        valid = paths >= 0
        classes = paths[valid]
        if classes.numel() == 0:
            return
        self._grow(int(classes.max()) + 1)
        rows = torch.arange(paths.shape[0])[:, None].expand_as(paths)[valid]
        self.counts.index_add_(0, classes, torch.ones(classes.numel(), dtype=torch.float64))
        self.sums.index_add_(0, classes, x[rows])
        self.stale[classes] = True

    def _refresh_precision(self) -> None:
        due = self.scattered - self.precision_at >= max(REFRESH_MIN, REFRESH_GROWTH * self.precision_at)
        if self.precision is not None and not due:
            return
        identity = torch.eye(self.dim, dtype=torch.float64)
        if self.scattered == 0:
            covariance = identity
        else:
            empirical = self.scatter / self.scattered
            scale = float(empirical.trace()) / self.dim or 1.0
            covariance = (1.0 - self.shrinkage) * empirical + self.shrinkage * scale * identity
        self.precision = torch.linalg.inv(covariance)
        self.precision_at = self.scattered
        self.stale[:] = True

    def frozen(self, level_class_ids: list[torch.Tensor], copy: bool = True,
               parents: list[torch.Tensor] | None = None) -> LinearDiscriminant:
        """The discriminant as it stands, for the classes of each level (global ids, in the
        level's index order), scored along the tree if ``parents`` are given (see
        ``LinearDiscriminant``). ``copy=False`` shares this object's tensors: for a prediction
        made at once, not for a snapshot that outlives the next update."""
        self._grow(max((int(ids.max()) + 1 for ids in level_class_ids if ids.numel()), default=0))
        self._refresh_precision()
        rows = self.stale.nonzero().flatten()
        if rows.numel():
            means = self.sums[rows] / self.counts[rows].clamp(min=1.0)[:, None]
            weights = means @ self.precision
            self.weights[rows] = weights
            self.biases[rows] = -0.5 * (weights * means).sum(dim=1)
            self.stale[rows] = False
        weights, biases, known = self.weights, self.biases, self.counts > 0
        if copy:
            weights, biases = weights.clone(), biases.clone()
        return LinearDiscriminant(weights, biases, known, list(level_class_ids), self.features, parents)

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "sums": self.sums, "scatter": self.scatter, "scattered": self.scattered,
                "precision": self.precision, "precision_at": self.precision_at, "weights": self.weights,
                "biases": self.biases, "stale": self.stale, "taken": self.taken,
                "taken_square_norm": self.taken_square_norm, "rejected": self.rejected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts, self.sums, self.scatter = state["counts"], state["sums"], state["scatter"]
        self.scattered, self.precision_at = int(state["scattered"]), int(state["precision_at"])
        self.precision = state["precision"]
        self.weights, self.biases, self.stale = state["weights"], state["biases"], state["stale"]
        self.taken, self.rejected = int(state["taken"]), int(state["rejected"])
        self.taken_square_norm = float(state["taken_square_norm"])
