"""A labelled dataset whose labels are full hierarchy paths, split into train and test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HierarchicalDataset:
    """Samples ``x`` (float32 N×D vectors, uint8 N×C×H×W images, or N texts as an object array of
    ``str``: see ``is_text``) and leaf label paths."""

    name: str
    x_train: np.ndarray
    labels_train: np.ndarray  # str, one full path per sample
    x_test: np.ndarray
    labels_test: np.ndarray

    def __post_init__(self) -> None:
        for split, x, labels in (("train", self.x_train, self.labels_train), ("test", self.x_test, self.labels_test)):
            if len(x) != len(labels):
                raise ValueError(f"{self.name}: {split} has {len(x)} samples but {len(labels)} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train and test samples differ in shape")

    @property
    def is_text(self) -> bool:
        """Raw texts, which an encoder turns into vectors (``text_embeddings.embedded``)."""
        return self.x_train.dtype == object

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def depth(self) -> int:
        return max(len(label.split("/")) for label in self.labels_train)

    def classes_per_level(self) -> list[int]:
        """Distinct classes at each level (over train labels), coarsest first."""
        counts = []
        for level in range(1, self.depth + 1):
            prefixes = {"/".join(p.split("/")[:level]) for p in self.labels_train if len(p.split("/")) >= level}
            counts.append(len(prefixes))
        return counts
