"""The named methods a user picks between, each a preset of learner options, and how options given
by name (``--learner KEY=VALUE``, a ``[learner]`` table) are read, applied and checked.

``resolve`` is the one way a learner's settings are made from a method and overrides: it records
where each option's value came from, and refuses a combination that would leave a part of the
learner inert (an option set for a part that is off, or two parts that cannot both act).
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping

from hle_stream.core.config import PARTS, LearnerConfig

_ER: dict[str, Any] = dict(eviction="reservoir", insert_before_training=False, flexible_sampling=False,
                           adaptive_lr=False)

PRESETS: dict[str, dict[str, Any]] = {
    # Ours: PL-FMS whose replayed samples teach their path (ancestors at a tenth of the weight, and
    # only once their class is past its sampling ramp), decoded along the tree, fused with a
    # streaming discriminant on unit-length rows scored along the tree; colour images and vectors
    # augmented (docs/method.md has what each option buys).
    "hle": dict(replay_supervision="path", decode="path", replay_ancestor_weight=0.1, replay_path_after_ramp=True,
                augmentation="colour-images", discriminant_weight=1.0, discriminant_normalise=True,
                discriminant_decode="tree", vector_dropout=0.5),
    # Experience replay: a reservoir memory filled after training, stream and memory half-half.
    "er": _ER,
    # ER with ER-ACE's asymmetric cross-entropy.
    "er-ace": {**_ER, "asymmetric_loss": True},
    # ER as the paper ran it: the released baselines' decaying learning rate, reset on a new class.
    "er-paper": {**_ER, "exp_reset_gamma": 0.9999},
    # PL-FMS in spirit: balanced importance eviction, insert-then-train, flexible sampling, own-level loss,
    # with a bounded importance probe and an EMA rule.
    "pl-fms": {},
    # PL-FMS as released, rule for rule: the whole memory re-scored, the released importance update and
    # the multi-depth adaptive learning rate.
    "pl-fms-reference": dict(importance_probe=None, importance_rule="released", adaptive_lr_period=1,
                             adaptive_lr_sliding=True),
}
DEFAULT_METHOD = "hle"

FORMER_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    # name used before 2026-12-02 -> (preset, options): the same settings, for old checkpoints and scripts
    "pl-fms-ancestor-hint-after-ramp-colour-aug-lda-unit-tree-feature-drop": ("hle", {}),
    "pl-fms-ancestor-hint-after-ramp-colour-aug-lda-unit-tree": ("hle", dict(vector_dropout=0.0)),
    "pl-fms-ancestor-hint-after-ramp-colour-aug-lda": ("hle", dict(vector_dropout=0.0, discriminant_normalise=False,
                                                                   discriminant_decode="flat")),
    "pl-fms-ancestor-hint-after-ramp-colour-aug": ("hle", dict(vector_dropout=0.0, discriminant_weight=0.0,
                                                               discriminant_normalise=False,
                                                               discriminant_decode="flat")),
    "pl-fms-ancestor-hint-after-ramp": ("pl-fms", dict(replay_supervision="path", decode="path",
                                                       replay_ancestor_weight=0.1, replay_path_after_ramp=True)),
    "pl-fms-ancestor-hint": ("pl-fms", dict(replay_supervision="path", decode="path", replay_ancestor_weight=0.1)),
    "pl-fms-ancestor-hint-ace": ("pl-fms", dict(replay_supervision="path", decode="path", replay_ancestor_weight=0.1,
                                                asymmetric_loss=True)),
    "pl-fms-replay-path-after-ramp": ("pl-fms", dict(replay_supervision="path", decode="path",
                                                     replay_path_after_ramp=True)),
    "pl-fms-replay-path-colour-aug": ("pl-fms", dict(replay_supervision="path", decode="path",
                                                     augmentation="colour-images")),
    "pl-fms-replay-path": ("pl-fms", dict(replay_supervision="path", decode="path")),
    "pl-fms-path": ("pl-fms", dict(supervision="path", decode="path")),
    "pl-fms-path-ace": ("pl-fms", dict(supervision="path", decode="path", asymmetric_loss=True)),
    "pl-fms-ancestors": ("pl-fms", dict(supervision="path")),
    "pl-fms-ace": ("pl-fms", dict(asymmetric_loss=True)),
    "pl-fms-pl": ("pl-fms", dict(pseudo_labels=True)),
    "er-lda": ("er", dict(discriminant_weight=1.0)),
    "er-lda-unit-tree": ("er", dict(discriminant_weight=1.0, discriminant_normalise=True, discriminant_decode="tree")),
    "er-feature-drop": ("er", dict(vector_dropout=0.5)),
}


class LearnerOptionError(ValueError):
    """An option name, value or combination the learner cannot use; the message names it."""


@dataclass(frozen=True)
class Resolved:
    """A learner's settings and, per option, where its value came from."""

    config: LearnerConfig
    sources: dict[str, str]


FIELDS = {f.name: f for f in fields(LearnerConfig)}


def resolve(method: str, overrides: Mapping[str, Any] | None = None, base: LearnerConfig | None = None) -> Resolved:
    """``base`` (defaults: the regime, e.g. a bench preset's memory) with method ``method``'s preset
    and then ``overrides`` applied, checked. Raises ``LearnerOptionError``."""
    if method not in PRESETS:
        raise LearnerOptionError(unknown_method_message(method))
    base = base or LearnerConfig()
    default = LearnerConfig()
    sources = {name: "default" if getattr(base, name) == getattr(default, name) else "base" for name in FIELDS}
    preset = PRESETS[method]
    checked = {key: parse_option(key, value) for key, value in (overrides or {}).items()}
    sources.update({key: f"method {method}" for key in preset})
    sources.update({key: "--learner" for key in checked})
    config = base.with_(**{**preset, **checked})
    check_parts(config, set(checked))
    return Resolved(config, sources)


def method_config(method: str, base: LearnerConfig | None = None, overrides: Mapping[str, Any] | None = None
                  ) -> LearnerConfig:
    """The settings of ``method`` (with ``overrides``) on top of ``base``."""
    return resolve(method, overrides, base).config


def resolve_name(name: str, base: LearnerConfig | None = None) -> LearnerConfig:
    """A preset's settings, or those a former method name stood for."""
    if name in FORMER_NAMES:
        preset, options = FORMER_NAMES[name]
        return method_config(preset, base, options)
    return method_config(name, base)


def all_names() -> list[str]:
    """Every name ``resolve_name`` takes: the presets, then the former names."""
    return [*PRESETS, *FORMER_NAMES]


def equivalent(name: str) -> str:
    """What a former method name is now, as command-line options."""
    preset, options = FORMER_NAMES[name]
    return " ".join([f"--method {preset}", *(f"--learner {k}={format_value(v)}" for k, v in options.items())])


def unknown_method_message(method: str) -> str:
    if method in FORMER_NAMES:
        return f"method {method!r} is now {equivalent(method)}"
    return f"unknown method {method!r}; choose from {', '.join(PRESETS)}"


# -- options by name --------------------------------------------------------------------------
def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (as given to ``--learner``) -> (option, typed value)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise LearnerOptionError(f"--learner {text!r}: expected KEY=VALUE, e.g. vector_dropout=0")
    return key, parse_option(key, value.strip())


def parse_option(key: str, value: Any) -> Any:
    """``value`` (a string from the command line, or a TOML value) as option ``key``'s type."""
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; 'hle-stream run --print-config' lists them"
        raise LearnerOptionError(f"unknown learner option {key!r}{hint}")
    kind = _field_type(key)
    allowed = allowed_values(key)
    try:
        parsed = _parse(kind, value)
    except (TypeError, ValueError):
        parsed = None
        allowed = allowed or describe_type(key)
    else:
        if not allowed or parsed in allowed:
            return parsed
    raise LearnerOptionError(f"learner option {key}={value!r}: expected {allowed if isinstance(allowed, str) else ', '.join(map(str, allowed))}")


def allowed_values(key: str) -> tuple[Any, ...]:
    """The values a choice option takes (empty for numbers and names)."""
    kind = _field_type(key)
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()


def describe_type(key: str) -> str:
    kind = _field_type(key)
    if typing.get_origin(kind) is Literal:
        return ", ".join(map(str, typing.get_args(kind)))
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    names = ["true or false" if a is bool else getattr(a, "__name__", str(a)) for a in (args or [kind])]
    return " or ".join(names + (["none"] if args else []))


def format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _field_type(key: str) -> Any:
    return typing.get_type_hints(LearnerConfig)[key]


def _parse(kind: Any, value: Any) -> Any:
    optional = isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is Literal:
        return str(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
                 "off": False}
        return words[str(value).lower()] if str(value).lower() in words else _raise()
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            _raise()
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            _raise()
        return float(value)
    return str(value)


def _raise() -> Any:
    raise ValueError


# -- parts that cannot act ----------------------------------------------------------------------
REQUIRES: dict[str, tuple[str, Any, str]] = {
    # option -> (option it needs, the value it needs, why), for options that only act within a part
    "importance_period": ("eviction", "balanced-importance", "importance scores only the balanced memory"),
    "importance_ema": ("eviction", "balanced-importance", "importance scores only the balanced memory"),
    "importance_probe": ("eviction", "balanced-importance", "importance scores only the balanced memory"),
    "importance_rule": ("eviction", "balanced-importance", "importance scores only the balanced memory"),
    "pseudo_threshold": ("pseudo_labels", True, "it shapes pseudo-labels"),
    "fms_horizon": ("flexible_sampling", True, "it is flexible sampling's ramp"),
    "discriminant_shrinkage": ("discriminant_weight", "> 0", "it shapes the discriminant"),
    "discriminant_normalise": ("discriminant_weight", "> 0", "it shapes the discriminant"),
    "discriminant_decode": ("discriminant_weight", "> 0", "it shapes the discriminant"),
    "adaptive_lr_period": ("adaptive_lr", True, "it shapes the adaptive learning rate"),
    "adaptive_lr_sliding": ("adaptive_lr", True, "it shapes the adaptive learning rate"),
}


def check_parts(config: LearnerConfig, chosen: set[str]) -> None:
    """Refuse settings under which a part would do nothing: an option ``chosen`` by name with a
    value for a part that is off, or a part switched on where it cannot act. (An option a preset
    set for a part an override then switched off is left alone: ``canonical`` shows it inert.)"""
    default = LearnerConfig()
    problems = [f"{key}={format_value(getattr(config, key))} needs {need}{' > 0' if value == '> 0' else '=' + format_value(value)} ({why})"
                for key, (need, value, why) in REQUIRES.items()
                if key in chosen and getattr(config, key) != getattr(default, key) and not _holds(config, need, value)]
    problems += [message for active, message in _conflicts(config) if active]
    if problems:
        raise LearnerOptionError("learner options that would do nothing: " + "; ".join(problems))


def canonical(config: LearnerConfig) -> LearnerConfig:
    """``config`` with every option of a part that is off at its default: two settings that train
    alike compare equal (a checkpoint is continued by whatever names produce its settings)."""
    default = LearnerConfig()
    inert = {key: getattr(default, key) for key, (need, value, _) in REQUIRES.items() if not _holds(config, need, value)}
    return config.with_(**inert)


def _holds(config: LearnerConfig, name: str, value: Any) -> bool:
    actual = getattr(config, name)
    return actual > 0 if value == "> 0" else actual == value


def _conflicts(config: LearnerConfig) -> list[tuple[bool, str]]:
    balanced = config.eviction == "balanced-importance"
    path_replay = config.replay_supervision == "path"
    return [
        (config.adaptive_lr and not balanced,
         "adaptive_lr needs eviction=balanced-importance (it is tested on importance scorings); "
         "set adaptive_lr=false"),
        (config.pseudo_labels and not balanced,
         "pseudo_labels needs eviction=balanced-importance (they are assigned when importance is scored)"),
        (config.pseudo_loss_weight > 0 and not config.pseudo_labels, "pseudo_loss_weight needs pseudo_labels=true"),
        (path_replay and config.supervision == "path",
         "replay_supervision=path needs supervision=own-level (with supervision=path every sample teaches its path)"),
        (config.replay_path_after_ramp and not (path_replay and config.flexible_sampling),
         "replay_path_after_ramp needs replay_supervision=path and flexible_sampling=true"),
        (config.replay_ancestor_weight != 1.0 and not (path_replay or config.supervision == "path"),
         "replay_ancestor_weight needs replay_supervision=path or supervision=path (else no ancestor is taught)"),
        (config.exp_reset_gamma is not None and config.adaptive_lr and balanced,
         "exp_reset_gamma and adaptive_lr are two learning-rate schedules; set adaptive_lr=false"),
    ]


def options_by_part() -> dict[str, list[dict[str, str]]]:
    """Every option with its type, default, help and measured reason, grouped by part (for docs)."""
    default = asdict(LearnerConfig())
    table: dict[str, list[dict[str, str]]] = {part: [] for part in PARTS}
    for name, spec in FIELDS.items():
        table[spec.metadata["part"]].append({"name": name, "type": describe_type(name),
                                             "default": format_value(default[name]),
                                             "help": spec.metadata["help"], "why": spec.metadata["why"]})
    return table
