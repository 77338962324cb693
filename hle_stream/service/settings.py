"""The daemon's settings, from one layer: command line > environment (``HLE_*``) > config file
(TOML, ``--config``) > defaults.

Every option is declared once, as a field of a settings dataclass (``hle_stream.service.config``);
this module turns resolved option values into those dataclasses (``build``), reads config files
and prints the resolved settings as one (``render``).
"""

from __future__ import annotations

import difflib
import json
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from connectors.settings import KafkaSettings
from hle_stream.core.config import LearnerConfig
from hle_stream.core.methods import LearnerOptionError, resolve
from hle_stream.service.config import (
    CommandSetting,
    DaemonConfig,
    HttpLimits,
    ProcessingConfig,
    ReplicaConfig,
    SettingsError,
    learner_overrides,
    run_settings,
    serve_settings,
)

SETTINGS: dict[str, CommandSetting] = {s.name: s for s in run_settings()}
"""Every option of ``hle-stream run`` by name, in the order they are listed."""
SERVE_SETTINGS: dict[str, CommandSetting] = {s.name: s for s in serve_settings()}
"""Every option of ``hle-stream serve`` by name."""


def _sections(settings: dict[str, CommandSetting], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Resolved option values as field values, by the settings object they belong to."""
    parts: dict[str, dict[str, Any]] = {}
    for name, command_setting in settings.items():
        parts.setdefault(command_setting.section, {})[command_setting.field] = command_setting.to_field(values[name])
    return parts


def build(values: dict[str, Any]) -> tuple[KafkaSettings, DaemonConfig]:
    """The daemon's settings from the resolved option values (every key of ``SETTINGS``)."""
    parts = _sections(SETTINGS, values)
    learner = LearnerConfig(**parts["learner"])
    processing = ProcessingConfig(learner_config=learner, **parts["processing"])
    try:
        processing.resolved_learner_config()
    except LearnerOptionError as err:
        raise SettingsError(str(err)) from None
    daemon = DaemonConfig(processing=processing, http=HttpLimits(**parts["http"]), **parts["daemon"])
    if daemon.model_store is not None and daemon.checkpoint_dir != DaemonConfig.checkpoint_dir:
        raise SettingsError(f"--checkpoint-dir {daemon.checkpoint_dir} and --model-store {daemon.model_store} name two "
                            "places for the model: give one (the model store holds the checkpoints)")
    return KafkaSettings(**parts["kafka"]), daemon


def build_replica(values: dict[str, Any]) -> tuple[KafkaSettings, ReplicaConfig]:
    """A predictor replica's settings from the resolved option values (every key of ``SERVE_SETTINGS``)."""
    parts = _sections(SERVE_SETTINGS, values)
    return KafkaSettings(**parts["kafka"]), ReplicaConfig(http=HttpLimits(**parts["http"]), **parts["replica"])


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
        if option not in SETTINGS:
            close = difflib.get_close_matches(option, SETTINGS, n=1)
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
    for option, command_setting in SETTINGS.items():
        if option == "learner":
            continue
        key, value = option.replace("_", "-"), values[option]
        if value is None:
            lines.append(f"# {key} is not set  ({sources[option]})")
            continue
        if command_setting.secret:
            value = "***"
        text = json.dumps(str(value) if isinstance(value, Path) else value)
        lines.append(f"{key} = {text}  # {sources[option]}")
    resolved = resolve(processing.method, dict(processing.learner_overrides), processing.learner_config)
    from_run_options = {s.field: s.name for s in SETTINGS.values() if s.section == "learner"}
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
