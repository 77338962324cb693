"""The daemon's settings, from one layer: command line > environment (``HLE_*``) > config file
(TOML, ``--config``) > defaults.

Every ``hle-stream run`` option is one field of a settings dataclass (``OPTIONS``); ``build``
makes the dataclasses from the resolved values by name, and a test checks that each option's
default is its field's default, so the command line and the dataclasses cannot drift apart.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from connectors.settings import KafkaSettings
from hle_stream.core.config import LearnerConfig
from hle_stream.core.methods import LearnerOptionError, parse_assignment, parse_option, resolve
from hle_stream.service.daemon import ROLES, DaemonConfig
from hle_stream.service.processing import REFINEMENTS, ProcessingConfig
from hle_stream.service.serving import HttpLimits
from hle_stream.service.train_budget import parse_budget

TARGETS: dict[str, type] = {"kafka": KafkaSettings, "daemon": DaemonConfig, "processing": ProcessingConfig,
                            "learner": LearnerConfig, "http": HttpLimits}

# option (as a Python name) -> (settings dataclass, field)
OPTIONS: dict[str, tuple[str, str]] = {
    "bootstrap_servers": ("kafka", "bootstrap_servers"),
    "security_protocol": ("kafka", "security_protocol"),
    "sasl_mechanism": ("kafka", "sasl_mechanism"),
    "sasl_username": ("kafka", "sasl_username"),
    "sasl_password": ("kafka", "sasl_password"),
    "ssl_cafile": ("kafka", "ssl_cafile"),
    "ssl_certfile": ("kafka", "ssl_certfile"),
    "ssl_keyfile": ("kafka", "ssl_keyfile"),
    "session_timeout_ms": ("kafka", "session_timeout_ms"),
    "heartbeat_interval_ms": ("kafka", "heartbeat_interval_ms"),
    "broker_wait_seconds": ("kafka", "broker_wait_seconds"),
    "input_topic": ("daemon", "input_topic"),
    "predictions_topic": ("daemon", "predictions_topic"),
    "dead_letter_topic": ("daemon", "dead_letter_topic"),
    "group_id": ("daemon", "group_id"),
    "input_partitions": ("daemon", "input_partitions"),
    "checkpoint_dir": ("daemon", "checkpoint_dir"),
    "checkpoint_every_events": ("daemon", "checkpoint_every_events"),
    "checkpoint_every_seconds": ("daemon", "checkpoint_every_seconds"),
    "max_batch": ("daemon", "max_batch"),
    "max_events": ("daemon", "max_events"),
    "http_host": ("daemon", "http_host"),
    "http_port": ("daemon", "http_port"),
    "no_metrics": ("daemon", "metrics"),
    "max_output_bytes": ("daemon", "max_output_bytes"),
    "serving_refresh_seconds": ("daemon", "serving_refresh_seconds"),
    "report_every_seconds": ("daemon", "report_every_seconds"),
    "trained_ids_log": ("daemon", "trained_ids_log"),
    "role": ("daemon", "role"),
    "model_store": ("daemon", "model_store"),
    "snapshot_every_seconds": ("daemon", "snapshot_every_seconds"),
    "no_predictions": ("daemon", "publish_predictions"),
    "train_budget": ("daemon", "train_budget"),
    "torch_threads": ("daemon", "torch_threads"),
    "method": ("processing", "method"),
    "learner": ("processing", "learner_overrides"),
    "input_shape": ("processing", "input_shape"),
    "input_dtype": ("processing", "input_dtype"),
    "max_message_bytes": ("processing", "max_message_bytes"),
    "max_abs_feature": ("processing", "max_abs_feature"),
    "confidence_threshold": ("processing", "confidence_threshold"),
    "target_precision": ("processing", "target_precision"),
    "dedupe_window": ("processing", "dedupe_window"),
    "join_window": ("processing", "join_window"),
    "join_max_age_seconds": ("processing", "join_max_age_seconds"),
    "refinements": ("processing", "refinements"),
    "memory_size": ("learner", "memory_size"),
    "batch_size": ("learner", "batch_size"),
    "importance_probe": ("learner", "importance_probe"),
    "device": ("learner", "device"),
    "max_classes": ("learner", "max_classes"),
    "http_token": ("http", "token"),
    "http_max_body_bytes": ("http", "max_body_bytes"),
    "http_max_events": ("http", "max_events"),
    "http_timeout_seconds": ("http", "request_timeout_s"),
    "http_max_concurrent": ("http", "max_concurrent"),
    "http_max_connections": ("http", "max_connections"),
    "http_predict_share": ("http", "predict_share"),
}
SECRETS = frozenset({"sasl_password", "http_token"})


class SettingsError(ValueError):
    """A value or a config file the daemon cannot use; the message names it."""


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise SettingsError(f"--input-shape {text!r}: comma-separated positive integers, e.g. 1,28,28")
    return shape


def _checked(parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except ValueError as err:
        raise SettingsError(str(err)) from None


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise SettingsError(f"{option} {value!r}: one of {', '.join(allowed)}")
    return value


def learner_overrides(value: Any) -> tuple[tuple[str, Any], ...]:
    """``--learner KEY=VALUE`` strings, or a config file's ``[learner]`` table, as typed pairs."""
    try:
        if isinstance(value, dict):
            return tuple((key.replace("-", "_"), parse_option(key.replace("-", "_"), v)) for key, v in value.items())
        return tuple(parse_assignment(text) for text in value or ())
    except LearnerOptionError as err:
        raise SettingsError(str(err)) from None


def _method(name: str) -> str:
    try:
        resolve(name)
    except LearnerOptionError as err:
        raise SettingsError(f"--method: {err}") from None
    return name


def _dtype(text: str | None) -> str | None:
    if text not in (None, "float32", "uint8"):
        raise SettingsError(f"--input-dtype {text!r}: float32 or uint8")
    return text


# how an option's value becomes its field's value, where they differ
CONVERT: dict[str, Callable[[Any], Any]] = {
    "http_port": lambda port: port or None,  # 0: no HTTP server
    "importance_probe": lambda size: size or None,  # 0: score the whole memory (the reference rule)
    "no_metrics": lambda off: not off,
    "no_predictions": lambda off: not off,
    "role": lambda role: _choice(role, ROLES, "--role"),
    "refinements": lambda policy: _choice(policy, REFINEMENTS, "--refinements"),
    "train_budget": lambda text: _checked(parse_budget, str(text)),
    "http_token": lambda token: token or None,
    "input_shape": _shape,
    "learner": learner_overrides,
    "method": _method,
    "input_dtype": _dtype,
}


def field_value(option: str, value: Any) -> Any:
    return CONVERT.get(option, lambda v: v)(value)


def build(values: dict[str, Any]) -> tuple[KafkaSettings, DaemonConfig]:
    """The daemon's settings from the resolved option values (every key of ``OPTIONS``)."""
    parts: dict[str, dict[str, Any]] = {target: {} for target in TARGETS}
    for option, (target, name) in OPTIONS.items():
        parts[target][name] = field_value(option, values[option])
    learner = LearnerConfig(**parts["learner"])
    processing = ProcessingConfig(learner_config=learner, **parts["processing"])
    try:
        processing.resolved_learner_config()
    except LearnerOptionError as err:
        raise SettingsError(str(err)) from None
    daemon = DaemonConfig(processing=processing, http=HttpLimits(**parts["http"]), **parts["daemon"])
    return KafkaSettings(**parts["kafka"]), daemon


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file of ``option = value`` lines (the ``run`` options without their dashes, e.g.
    ``memory-size = 500``), as a map of option names to values. Raises ``SettingsError``."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as err:
        raise SettingsError(f"cannot read the config file {path}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"{path} is not valid TOML: {err}") from None
    values = {}
    for key, value in document.items():
        option = key.replace("-", "_")
        if option not in OPTIONS:
            close = difflib.get_close_matches(option, OPTIONS, n=1)
            hint = f"; did you mean {close[0].replace('_', '-')}?" if close else ""
            raise SettingsError(f"{path}: unknown setting {key!r}{hint} (the settings are the options of "
                                f"'hle-stream run', without the leading dashes)")
        if option == "learner":
            if not isinstance(value, dict):
                raise SettingsError(f"{path}: learner must be a table ([learner] with one option = value a line)")
            try:
                value = dict(learner_overrides(value))  # checked now, with the file named
            except SettingsError as err:
                raise SettingsError(f"{path}: [learner] {err}") from None
        elif isinstance(value, (dict, list)):
            raise SettingsError(f"{path}: {key} must be a single value, not a {type(value).__name__}")
        values[option] = value
    return values


def render(values: dict[str, Any], sources: dict[str, str], processing: ProcessingConfig,
           learner_sources: dict[str, str]) -> str:
    """The resolved settings as a config file (secrets masked), each with where it came from; the
    learner's options last, as a ``[learner]`` table: those set by name as settings, every other
    resolved one as a comment (the method's preset, a ``run`` option or the default)."""
    lines = []
    for option in OPTIONS:
        if option == "learner":
            continue
        key, value = option.replace("_", "-"), values[option]
        if value is None:
            lines.append(f"# {key} is not set  ({sources[option]})")
            continue
        if option in SECRETS:
            value = "***"
        text = json.dumps(str(value) if isinstance(value, Path) else value)
        lines.append(f"{key} = {text}  # {sources[option]}")
    resolved = resolve(processing.method, dict(processing.learner_overrides), processing.learner_config)
    from_run_options = {name: option for option, (target, name) in OPTIONS.items() if target == "learner"}
    lines.append("")
    lines.append(f"[learner]  # method {processing.method}: its preset, then these options")
    for name, value in asdict(resolved.config).items():
        text = "\"none\"" if value is None else json.dumps(value)
        if name in learner_sources:
            lines.append(f"{name} = {text}  # {learner_sources[name]}")
            continue
        source = resolved.sources[name]
        if name in from_run_options and source == "base":
            source = f"--{from_run_options[name].replace('_', '-')} ({sources[from_run_options[name]]})"
        shown = "none" if value is None else text
        lines.append(f"# {name} = {shown}  # {source}")
    return "\n".join(lines)
