"""What each benchmark run trains: a method's preset plus learner options, under a label.

``--methods`` names presets or specs of an ``--ablations`` file (TOML, one table per spec: its
``method`` and any learner options), so that an ablation is a bench spec, not a product method.
``--learner`` options apply to every run; the label then says so (``hle[vector_dropout=0]``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hle_stream.core.methods import PRESETS, LearnerOptionError, format_value, parse_option, resolve

LearnerRun = tuple[str, tuple[tuple[str, Any], ...]]  # (preset, learner options)


class BenchSpecError(ValueError):
    """A method or spec name, or an ablations file, the bench cannot use; the message names it."""


def read_ablations(path: Path) -> dict[str, LearnerRun]:
    """The named specs of an ablations file, each checked as the learner would check it."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BenchSpecError(f"cannot read the ablations file {path}: {err}") from None
    specs = {}
    for name, table in document.items():
        if not isinstance(table, dict) or "method" not in table:
            raise BenchSpecError(f"{path}: [{name}] needs a method = \"...\" line")
        options = {key.replace("-", "_"): value for key, value in table.items() if key != "method"}
        specs[name] = _checked(name, table["method"], options, str(path))
    return specs


def learner_specs(names: list[str], overrides: dict[str, Any], ablations: Path | None) -> dict[str, LearnerRun]:
    """Label -> (preset, options) for each name of ``--methods``, with ``overrides`` on top."""
    known = read_ablations(ablations) if ablations is not None else {}
    runs = {}
    for name in names:
        if name in known:
            preset, options = known[name]
        elif name in PRESETS:
            preset, options = name, ()
        else:
            choices = ", ".join([*PRESETS, *known])
            raise BenchSpecError(f"unknown method or spec {name!r}; choose from {choices}"
                                 + ("" if ablations else " (or name specs with --ablations FILE)"))
        if overrides:
            suffix = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items())
            name = f"{name}[{suffix}]"
        runs[name] = _checked(name, preset, {**dict(options), **overrides}, "--learner")
    return runs


def _checked(name: str, preset: str, options: dict[str, Any], where: str) -> LearnerRun:
    try:
        typed = {key: parse_option(key, value) for key, value in options.items()}
        resolve(preset, typed)
    except LearnerOptionError as err:
        raise BenchSpecError(f"{where}: {name}: {err}") from None
    return preset, tuple(typed.items())
