"""The layers hold: ``connectors/`` knows nothing of the learning core, and outside
``hle_stream/core`` a learner is used only through its public face. Both read the source."""

from __future__ import annotations

import ast
from pathlib import Path

from hle_stream.core.learner import PUBLIC_FACE, HierarchicalLearner

REPO = Path(__file__).resolve().parents[1]


def _modules(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py") if ".venv" not in p.parts)


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_connectors_do_not_import_the_learning_core_or_the_service():
    offenders = {str(p.relative_to(REPO)): sorted(m for m in _imported(p) if m.split(".")[0] == "hle_stream")
                 for p in _modules("connectors")}
    assert {p: m for p, m in offenders.items() if m} == {}


def test_the_learning_core_imports_nothing_from_the_layers_above_it():
    offenders = {str(p.relative_to(REPO)): sorted(m for m in _imported(p)
                                                  if m.startswith(("hle_stream.service", "hle_stream.eval",
                                                                   "hle_stream.cli", "connectors")))
                 for p in _modules("hle_stream/core")}
    assert {p: m for p, m in offenders.items() if m} == {}


def _learner_attribute_uses(path: Path) -> list[tuple[int, str]]:
    """``learner.X`` and ``<anything>.learner.X``: the names the code uses learners by."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "learner") or \
                    (isinstance(owner, ast.Attribute) and owner.attr == "learner"):
                uses.append((node.lineno, node.attr))
    return uses


def test_outside_the_core_a_learner_is_used_only_through_its_public_face():
    offenders = [f"{p.relative_to(REPO)}:{line}: learner.{attr}"
                 for p in _modules("hle_stream", "connectors", "benchmarks")
                 if "core" not in p.relative_to(REPO).parts
                 for line, attr in _learner_attribute_uses(p) if attr not in PUBLIC_FACE]
    assert offenders == []


def test_the_public_face_exists():
    learner_attributes = set(dir(HierarchicalLearner)) | {"config", "device", "tree", "steps", "seen"}  # set in __init__
    assert PUBLIC_FACE <= learner_attributes
