"""The second expert beside the network: a streaming linear discriminant over the raw inputs,
whose probabilities ``hle_stream.core.inference.level_probabilities`` fuses with the network's
(a product of experts, the discriminant's raised to ``weight``). ``NoExpert`` stands in when the
discriminant is off, so the learner calls the same hooks either way."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from hle_stream.core.discriminant import LinearDiscriminant, StreamingDiscriminant
from hle_stream.core.inference import scale_inputs
from hle_stream.core.tree_tables import TreeTables


class DiscriminantExpert:
    def __init__(self, input_shape: tuple[int, ...], weight: float, shrinkage: float, normalise: bool, decode: str,
                 seed: int) -> None:
        self.weight = weight
        self.decode = decode
        self.is_image = len(input_shape) == 3
        self.model = StreamingDiscriminant(math.prod(input_shape), shrinkage, seed, normalise)

    @property
    def rejected(self) -> int:
        """Samples left out of the statistics as outliers."""
        return self.model.rejected

    def learn(self, x: torch.Tensor, labels: Sequence[str], path_of: Callable[[str], list[int]],
              total_classes: int) -> None:
        """Stream samples ``x`` with label paths ``labels`` (``path_of``: a label's global class
        ids, coarsest first)."""
        paths = [path_of(label) for label in labels]
        self.model.update(self._features(x), torch.tensor([path[-1] for path in paths]), _padded(paths), total_classes)

    def add(self, x: torch.Tensor, classes: list[int]) -> None:
        """Count one sample toward the means of ``classes`` only (a refined memory sample)."""
        self.model.add(self._features(x), _padded([classes]))

    def frozen(self, tables: TreeTables, depth: int, copy: bool) -> LinearDiscriminant:
        """The expert as it stands, for the classes of each of ``depth`` levels."""
        levels = [tables.global_ids(level) for level in range(1, depth + 1)]
        parents = tables.parents() if self.decode == "tree" else None
        return self.model.frozen(levels, copy, parents)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(scale_inputs(torch.as_tensor(x), self.is_image))

    def state_dict(self) -> dict[str, Any]:
        return {"discriminant": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["discriminant"])


class NoExpert:
    """The network alone."""

    weight = 0.0
    rejected = 0

    def learn(self, x: torch.Tensor, labels: Sequence[str], path_of: Callable[[str], list[int]],
              total_classes: int) -> None:
        pass

    def add(self, x: torch.Tensor, classes: list[int]) -> None:
        pass

    def frozen(self, tables: TreeTables, depth: int, copy: bool) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _padded(paths: list[list[int]]) -> torch.Tensor:
    """Lists of class ids as one tensor, each row padded with -1."""
    rows = torch.full((len(paths), max((len(p) for p in paths), default=0)), -1, dtype=torch.long)
    for i, path in enumerate(paths):
        rows[i, : len(path)] = torch.tensor(path, dtype=torch.long)
    return rows
