"""The layers hold: every package imports only its own layer and those before it (one written
order, ``LAYERS``), and outside ``hle_stream/core`` a learner is used only through its public face.
Both read the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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


LAYERS = (
    ("hle_stream.core", "the learner: label tree, replay memory, networks, methods; no I/O"),
    ("connectors", "Kafka, the local broker, the model store; no learning code"),
    ("hle_stream.contract", "the event contract: events in, prediction documents out"),
    ("hle_stream.text", "text events' features: a frozen pretrained sentence encoder, loaded lazily"),
    ("hle_stream.metrics", "live measures: prequential accuracy, served-path quality, the calibrated threshold"),
    ("hle_stream.eval", "datasets, HLE scenarios, the offline benchmark, the producer simulation"),
    ("hle_stream.service", "the daemon, trainer and replica roles, HTTP, telemetry, checkpoints"),
    ("hle_stream.cli hle_stream.demo hle_stream.user_errors", "the hle-stream command and the embedded demo"),
)
"""The one written order, bottom first: a module may import its own layer and the ones before it.
``tests/support`` (harnesses) and ``benchmarks/`` sit above all of them and ship in no package."""


def _layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of a dotted module name (None: not ours, e.g. torch)."""
    best = None
    for index, (prefixes, _) in enumerate(LAYERS):
        for prefix in prefixes.split():
            if module == prefix or module.startswith(prefix + "."):
                best = index
    return best


def _dotted(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def upward_imports(path: Path, module: str) -> list[str]:
    """The imports of ``path`` (read as module ``module``) of a later layer, or of anything of ours
    outside the layers (the test harnesses, the benchmarks)."""
    own = _layer_of(module)
    assert own is not None, f"{module} is in no layer of LAYERS"
    return [name for name in sorted(_imported(path))
            if name.split(".")[0] in ("hle_stream", "connectors", "tests", "benchmarks")
            and (_layer_of(name) is None or _layer_of(name) > own)]


def test_every_module_imports_only_its_own_layer_and_those_before_it():
    offenders = {_dotted(p): upward_imports(p, _dotted(p)) for p in _modules("hle_stream", "connectors")}
    assert {module: names for module, names in offenders.items() if names} == {}


def test_an_upward_import_is_caught(tmp_path):
    """The check itself: the label tree importing the daemon, or a harness of the tests, is reported."""
    planted = tmp_path / "hierarchy.py"
    planted.write_text((REPO / "hle_stream/core/hierarchy.py").read_text()
                       + "\nfrom hle_stream.service.daemon import Daemon\nfrom tests.support.fleet import failover_run\n")
    assert upward_imports(planted, "hle_stream.core.hierarchy") == ["hle_stream.service.daemon", "tests.support.fleet"]


def test_the_readme_layout_lists_the_layers_in_their_order():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `([a-z_/ .]+)`", section, flags=re.M)
    written = [prefixes.split()[0].replace(".", "/") for prefixes, _ in LAYERS]
    assert [entry.split()[0].removesuffix(".py").rstrip("/") for entry in listed[:len(written)]] == written


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
    from hle_stream.core.learner import PUBLIC_FACE  # here: the layer checks read the source only, so that an
    # import cycle fails them with its name rather than failing the whole module's import

    offenders = [f"{p.relative_to(REPO)}:{line}: learner.{attr}"
                 for p in _modules("hle_stream", "connectors", "benchmarks")
                 if "core" not in p.relative_to(REPO).parts
                 for line, attr in _learner_attribute_uses(p) if attr not in PUBLIC_FACE]
    assert offenders == []


def test_the_public_face_exists():
    from hle_stream.core.learner import PUBLIC_FACE, HierarchicalLearner

    learner_attributes = set(dir(HierarchicalLearner)) | {"config", "device", "tree", "steps", "seen"}  # set in __init__
    assert PUBLIC_FACE <= learner_attributes
