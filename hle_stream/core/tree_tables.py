"""Tensor views of the label tree (parents, ancestors, global ids), rebuilt when it grows."""

from __future__ import annotations

import torch

from hle_stream.core.hierarchy import LabelTree


class TreeTables:
    """Cached lookup tensors on ``device``; stale entries are dropped when a class is added."""

    def __init__(self, tree: LabelTree, device: torch.device) -> None:
        self.tree = tree
        self.device = device
        self._version = -1
        self._cache: dict[tuple, torch.Tensor] = {}

    def _get(self, key: tuple, build) -> torch.Tensor:
        if self._version != self.tree.total_classes:
            self._cache.clear()
            self._version = self.tree.total_classes
        if key not in self._cache:
            self._cache[key] = torch.tensor(build(), dtype=torch.long, device=self.device)
        return self._cache[key]

    def ancestors(self, level: int, ancestor_level: int) -> torch.Tensor:
        """Index at ``ancestor_level`` of each class of ``level``."""
        return self._get(("anc", level, ancestor_level), lambda: self.tree.ancestor_table(level, ancestor_level))

    def global_ids(self, level: int) -> torch.Tensor:
        n = self.tree.num_classes(level)
        return self._get(("gid", level), lambda: [self.tree.global_id_of(level, i) for i in range(n)])

    def parents(self) -> list[torch.Tensor]:
        """``parents[h]``: parent index (level h) of each class of level h+1; entry 0 is empty."""
        empty = torch.empty(0, dtype=torch.long, device=self.device)
        return [empty] + [self.ancestors(level, level - 1) for level in range(2, self.tree.depth + 1)]
