"""The label hierarchy as data: label paths such as ``clothes/tops/shirt``.

The tree is grown from the labels seen on the stream, so a new class may appear at any level
at any time. Classes are numbered per level by order of first appearance (as in the HLE
paper's code), and every (level, class) pair also gets a global id, also by first appearance,
which the replay memory uses as its bin key.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

SEPARATOR = "/"
MAX_SEGMENT_CHARS = 128
"""Longest segment accepted: a class name, not a document (labels are held per class in the
model, the checkpoint and ``/classes``, so their size multiplies)."""
MAX_PATH_CHARS = 512
"""Longest whole path accepted (eight segments of 64 characters fit)."""
# Control (Cc), format (Cf: zero-width and bidi overrides), surrogate (Cs), private-use (Co) and
# unassigned (Cn) code points, and line/paragraph separators: invisible or unprintable in a
# dashboard, a log line or JSON, so two labels that look alike could be different classes.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def normalize_label(path: str) -> str:
    """The NFC form of a label path: the same text typed on two systems is the same class."""
    return unicodedata.normalize("NFC", path)


class LabelPathError(ValueError):
    """A label path that cannot enter the tree; ``reason`` is one of a fixed set of codes."""

    REASONS = ("empty_path", "empty_segment", "too_deep", "class_cap", "too_long", "bad_character", "not_nfc")

    def __init__(self, reason: str, path: str, detail: str) -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        self.path = path
        super().__init__(f"invalid label path {path!r} ({reason}): {detail}")


@dataclass(frozen=True)
class NewClass:
    """A class the tree registered just now: its level (1 = coarsest), index and path."""

    level: int
    index: int
    global_id: int
    path: str


class LabelTree:
    """Registry of the classes of every level, grown from label paths.

    Parameters
    ----------
    max_depth
        The deepest level accepted; deeper paths are rejected (``too_deep``).
    max_classes
        Cap on the number of classes over all levels (``class_cap``): the model's heads and
        the replay memory's bins grow with it, so an unbounded label space must be refused.

    A path is accepted when it is in Unicode NFC (``normalize_label``), holds no control,
    format, surrogate, private-use, unassigned or line/paragraph-separator character, is at
    most ``MAX_PATH_CHARS`` long, and each ``/``-separated segment is non-empty, at most
    ``MAX_SEGMENT_CHARS`` long and has no leading or trailing whitespace.

    Examples
    --------
    >>> tree = LabelTree()
    >>> [c.path for c in tree.add("clothes/tops/shirt")]
    ['clothes', 'clothes/tops', 'clothes/tops/shirt']
    >>> tree.path_indices("clothes/tops")
    [0, 0]
    >>> tree.num_classes(2), tree.depth
    (1, 3)
    """

    def __init__(self, max_depth: int = 8, max_classes: int = 10_000) -> None:
        self.max_depth = max_depth
        self.max_classes = max_classes
        self._paths: list[list[str]] = []  # per level (0-based), class paths in index order
        self._index: dict[str, tuple[int, int]] = {}  # path -> (level, index)
        self._global: dict[str, int] = {}  # path -> global id
        self._global_paths: list[str] = []

    # -- validation -------------------------------------------------------------------------
    def split(self, path: str) -> list[str]:
        """The segments of a path, or ``LabelPathError`` when it is malformed."""
        if not isinstance(path, str) or not path.strip():
            raise LabelPathError("empty_path", str(path), "a label must be a non-empty string")
        if len(path) > MAX_PATH_CHARS:
            raise LabelPathError("too_long", path[:64] + "…", f"{len(path)} characters exceed {MAX_PATH_CHARS}")
        bad = next((c for c in path if unicodedata.category(c) in _FORBIDDEN_CATEGORIES), None)
        if bad is not None:
            raise LabelPathError("bad_character", path.encode("utf-8", "backslashreplace").decode(),
                                 f"U+{ord(bad):04X} ({unicodedata.category(bad)}) is a control, format, "
                                 "surrogate, private-use, unassigned or separator character")
        if not unicodedata.is_normalized("NFC", path):
            raise LabelPathError("not_nfc", path, "label paths must be in Unicode NFC (normalize_label)")
        segments = path.split(SEPARATOR)
        if any(not s.strip() for s in segments):
            raise LabelPathError("empty_segment", path, "every segment between '/' must be non-empty")
        if any(s != s.strip() for s in segments):
            raise LabelPathError("empty_segment", path, "a segment may not start or end with whitespace")
        long = next((s for s in segments if len(s) > MAX_SEGMENT_CHARS), None)
        if long is not None:
            raise LabelPathError("too_long", path[:64] + "…", f"a segment of {len(long)} characters exceeds "
                                                              f"{MAX_SEGMENT_CHARS}")
        if len(segments) > self.max_depth:
            raise LabelPathError(
                "too_deep", path, f"depth {len(segments)} exceeds the maximum of {self.max_depth}"
            )
        return segments

    def check(self, path: str) -> int:
        """Validate ``path`` without registering it; returns how many classes it would add."""
        segments = self.split(path)
        missing = sum(
            SEPARATOR.join(segments[: i + 1]) not in self._index for i in range(len(segments))
        )
        if missing and len(self._global_paths) + missing > self.max_classes:
            raise LabelPathError(
                "class_cap", path, f"would exceed the cap of {self.max_classes} classes"
            )
        return missing

    def check_all(self, paths: Sequence[str]) -> None:
        """Validate a batch of paths as if they were added in order, without adding them: the
        cap counts the classes earlier paths of the batch would add."""
        rejected = self.over_cap(paths)
        if rejected:
            raise LabelPathError("class_cap", paths[rejected[0]], f"would exceed the cap of {self.max_classes} classes")

    def over_cap(self, paths: Sequence[str]) -> list[int]:
        """Indices of the paths the class cap turns away when the batch is admitted in order
        (the others fit together). Each path must be well formed (``split`` raises otherwise)."""
        new: set[str] = set()
        rejected = []
        for i, path in enumerate(paths):
            segments = self.split(path)
            missing = {SEPARATOR.join(segments[: k + 1]) for k in range(len(segments))} - new
            missing = {prefix for prefix in missing if prefix not in self._index}
            if missing and len(self._global_paths) + len(new) + len(missing) > self.max_classes:
                rejected.append(i)
            else:
                new |= missing
        return rejected

    # -- growth -----------------------------------------------------------------------------
    def add(self, path: str) -> list[NewClass]:
        """Register ``path`` and all its ancestors; returns the classes that were new."""
        self.check(path)
        segments = self.split(path)
        created: list[NewClass] = []
        for level in range(1, len(segments) + 1):
            prefix = SEPARATOR.join(segments[:level])
            if prefix in self._index:
                continue
            while len(self._paths) < level:
                self._paths.append([])
            index = len(self._paths[level - 1])
            self._paths[level - 1].append(prefix)
            self._index[prefix] = (level, index)
            self._global[prefix] = len(self._global_paths)
            self._global_paths.append(prefix)
            created.append(NewClass(level, index, self._global[prefix], prefix))
        return created

    # -- lookup -----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Number of levels that hold at least one class."""
        return len(self._paths)

    @property
    def total_classes(self) -> int:
        return len(self._global_paths)

    def num_classes(self, level: int) -> int:
        return len(self._paths[level - 1]) if level <= self.depth else 0

    def classes(self, level: int) -> list[str]:
        return list(self._paths[level - 1]) if level <= self.depth else []

    def __contains__(self, path: object) -> bool:
        return path in self._index

    def locate(self, path: str) -> tuple[int, int]:
        """(level, index) of a known class path."""
        return self._index[path]

    def global_id(self, path: str) -> int:
        return self._global[path]

    def global_id_of(self, level: int, index: int) -> int:
        return self._global[self._paths[level - 1][index]]

    def path_of(self, level: int, index: int) -> str:
        return self._paths[level - 1][index]

    def path_indices(self, path: str) -> list[int]:
        """Index of each ancestor of a known path, coarsest first (the path itself last)."""
        segments = self.split(path)
        return [
            self._index[SEPARATOR.join(segments[: i + 1])][1] for i in range(len(segments))
        ]

    def parent_index(self, level: int, index: int) -> int:
        """Index at ``level - 1`` of the parent of class ``index`` at ``level`` (level ≥ 2)."""
        path = self._paths[level - 1][index]
        return self._index[path.rsplit(SEPARATOR, 1)[0]][1]

    def ancestor_table(self, level: int, ancestor_level: int) -> list[int]:
        """For each class at ``level``, the index of its ancestor at ``ancestor_level``."""
        table = []
        for path in self._paths[level - 1]:
            prefix = SEPARATOR.join(path.split(SEPARATOR)[:ancestor_level])
            table.append(self._index[prefix][1])
        return table

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "max_depth": self.max_depth,
            "max_classes": self.max_classes,
            "paths_in_order": list(self._global_paths),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "LabelTree":
        tree = cls(max_depth=state["max_depth"], max_classes=state["max_classes"])
        for path in state["paths_in_order"]:
            tree.add(path)
        return tree
