"""The daemon's settings, each declared once, as a field of the dataclass that uses it.

A field made with ``connectors.settings.setting`` (or a learner option with ``run=``) is an option
of ``hle-stream run``: its name gives ``--name``, the ``HLE_NAME`` environment variable and the
``name`` key of a config file; its default and type are the field's. ``run_settings`` lists them,
in the order of ``SECTIONS``; the command line, the config file, ``--print-config`` and ``build``
are all derived from that list. This module stays light (no torch), so the CLI starts fast.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from connectors.settings import SETTING, KafkaSettings, setting
from hle_stream.contract import DEFAULT_MAX_ABS_FEATURE, DEFAULT_MAX_TEXT_CHARS
from hle_stream.core.config import LearnerConfig
from hle_stream.core.methods import (
    DEFAULT_METHOD,
    LearnerOptionError,
    method_config,
    parse_assignment,
    parse_option,
    resolve,
)
from hle_stream.core.methods import PRESETS as METHODS
from hle_stream.metrics.served_threshold import DEFAULT_CONFIDENCE_THRESHOLD
from hle_stream.service.train_budget import parse_budget
from hle_stream.text.encoder import DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT, SHIPPED_ENCODER, EncoderChoice

ROLES = ("single", "trainer")
REFINEMENTS = ("relearn", "upgrade")
"""What a finer label for a sample already learned does: ``relearn`` learns the sample again at
its new label (the coarse copy in the replay memory stays until the balance evicts it, as in the
dual-label benchmark); ``upgrade`` changes the copy in the memory in place (one copy, balanced by
its new label) and learns again only a sample the memory no longer holds. Measured on the
dual-label stream, ``upgrade`` costs the coarse level: a coarse class whose samples are all
refined loses its memory bin (docs/events.md)."""


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


def _one_of(allowed: tuple[str, ...], option: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise SettingsError(f"--{option} {value!r}: one of {', '.join(allowed)}")
        return value
    return check


def _budget(text: Any) -> str:
    try:
        return parse_budget(str(text))
    except ValueError as err:
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


def _encoder(name: str) -> str:
    """A path that names no folder is a mistake to report now, not a hub name to look up later."""
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
        raise SettingsError(f"--encoder {name!r}: no such folder (a sentence-transformers model folder, or minilm)")
    return str(Path(name).expanduser()) if name.startswith("~") else name


def _offset_reset(text: str | None) -> str | None:
    if text not in (None, "earliest", "latest"):
        raise SettingsError(f"--reset-offsets {text!r}: earliest or latest")
    return text


def learner_overrides(value: Any) -> tuple[tuple[str, Any], ...]:
    """``--learner KEY=VALUE`` strings, or a config file's ``[learner]`` table, as typed pairs."""
    try:
        if isinstance(value, dict):
            return tuple((key.replace("-", "_"), parse_option(key.replace("-", "_"), v)) for key, v in value.items())
        return tuple(parse_assignment(text) for text in value or ())
    except LearnerOptionError as err:
        raise SettingsError(str(err)) from None


LEARNER_HELP = ("A learner option over the method's preset, as KEY=VALUE (e.g. vector_dropout=0); repeat it for "
                "more. 'hle-stream run --print-config' lists every option; docs/method.md says what each does.")


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = setting(1 << 20, "Larger /predict bodies are refused (413).", option="http_max_body_bytes",
                                  min=1)  # about 40 Fashion-MNIST images as JSON lists, 300 in x_b64
    max_events: int = setting(256, "More events in one /predict request are refused (413).",
                              option="http_max_events", min=1)
    request_timeout_s: float = setting(10.0, "Deadline for a request's head, and again for its body (408).",
                                       option="http_timeout_seconds", min=0.1)
    max_concurrent: int = setting(8, "/predict requests in flight at once; more get 503 with Retry-After.",
                                  option="http_max_concurrent", min=1)
    max_connections: int = setting(512, "Open HTTP connections; more are closed at once.",
                                   option="http_max_connections", min=1)
    predict_threads: int = 1  # worker threads: predictions share the CPU with training
    predict_share: float = setting(0.1, "Share of one core's time /predict may use (over 5 s); beyond it 503, so "
                                        "that learning keeps its CPU.", option="http_predict_share", min=0.01, max=16.0)
    token: str | None = setting(None, "Bearer token that /predict, /classes and /metrics require; needed when "
                                      "--http-host is not loopback.", option="http_token",
                                parse=lambda token: token or None, secret=True)


@dataclass(frozen=True)
class ProcessingConfig:
    method: str = setting(DEFAULT_METHOD, f"Learner: {', '.join(METHODS)}.", parse=_method)
    learner_config: LearnerConfig = field(default_factory=LearnerConfig)  # the base the method's preset goes on
    learner_overrides: tuple[tuple[str, Any], ...] = setting(
        (), LEARNER_HELP + " Added to the config file's [learner] table.", option="learner",
        type=Optional[list[str]], parse=learner_overrides, shown=lambda pairs: None)  # over the preset
    input_shape: tuple[int, ...] | None = setting(
        None, "Feature shape, e.g. 1,28,28 (default: the first valid event's).", type=Optional[str], parse=_shape,
        shown=lambda shape: ",".join(map(str, shape)) if shape else None)
    input_dtype: str | None = setting(None, "Feature dtype, float32 or uint8 (default: the first valid event's).",
                                      parse=_dtype)
    max_message_bytes: int = setting(4 << 20, "Larger input values are dead-lettered (too_large).", min=1)
    max_abs_feature: float = setting(DEFAULT_MAX_ABS_FEATURE, "Float features beyond ± this are dead-lettered "
                                     "(out_of_range): huge values would turn the weights to NaN.", min=0.0)
    confidence_threshold: float = setting(
        DEFAULT_CONFIDENCE_THRESHOLD, "Predicted path stops below this probability (with --target-precision, until "
        "the labels have calibrated one).")
    target_precision: float = setting(
        0.95, "Keep this share of served path nodes right: the threshold becomes the lowest whose precision over the "
        "last 2,000 labelled path nodes reaches it, so paths go as deep as that allows (0: --confidence-threshold "
        "stays fixed).", min=0.0, max=1.0)
    dedupe_window: int = setting(100_000, "A record whose id is among this many latest ids with features is "
                                          "dead-lettered (duplicate_id); 0: off.", min=0)
    join_window: int = setting(
        10_000, "Keep the features of this many latest events for a label event ({\"id\", \"label\"} without "
        "features) that comes later, or refines the label; 0: no label events (such a record is dead-lettered as "
        "missing_field).", min=0)
    join_max_age_seconds: float = setting(3600.0, "... and for at most this long; a later label is dead-lettered as "
                                                  "label_expired.", min=0.0)
    encoder: str = setting(
        SHIPPED_ENCODER, "How text events ({\"id\", \"text\"}) become features: minilm (all-MiniLM-L6-v2, shipped "
        "in the [text] extra, no network) or a local sentence-transformers model folder (or, online, a hub model "
        "name). Loaded when the first text event comes; a model is bound to its encoder for good.", parse=_encoder)
    encoder_max_tokens: int = setting(DEFAULT_MAX_TOKENS, "The encoder reads this many word pieces of each text "
                                      "(more: slower, see docs/text.md); part of the encoder's identity.",
                                      min=1, max=MAX_TOKENS_LIMIT)
    encoder_threads: int = setting(0, "Threads the encoder computes with (0: --torch-threads).", min=0)
    max_text_chars: int = setting(DEFAULT_MAX_TEXT_CHARS, "Longer texts are dead-lettered (too_large).", min=1)
    refinements: str = setting(
        "relearn", "A finer label for an event learned earlier (a, then a/b): relearn (learn the sample again at its "
        "new label; its coarse copy in the replay memory stays) or upgrade (change the copy in the replay memory in "
        "place; costs the coarse level, see docs/events.md).", parse=_one_of(REFINEMENTS, "refinements"))

    def resolved_learner_config(self) -> LearnerConfig:
        """The learner's settings: the method's preset over the base, then the named overrides."""
        return method_config(self.method, self.learner_config, dict(self.learner_overrides))

    def encoder_choice(self) -> EncoderChoice:
        return EncoderChoice(self.encoder, self.encoder_max_tokens, self.encoder_threads)


@dataclass(frozen=True)
class DaemonConfig:
    input_topic: str = setting("hle-events", "Topic of labelled/unlabelled events (contract v1).")
    predictions_topic: str = setting("hle-predictions", "Topic the coarse-to-fine predictions go to.")
    dead_letter_topic: str = setting("hle-dead-letters", "Topic for events that fail to parse or validate.")
    group_id: str = setting("hle-stream", "Kafka consumer group.")
    input_partitions: int = setting(1, "Partitions of the input topic when the daemon creates it.", min=1)
    checkpoint_dir: Path = setting(Path("checkpoints"), "Where checkpoints are written and resumed from.")
    checkpoint_every_events: int = setting(5000, "Checkpoint (then commit) after this many events…", min=1)
    checkpoint_every_seconds: float = setting(60.0, "…or after this many seconds, whichever comes first.")
    max_batch: int = setting(64, "Events per micro-batch (predicted, then learned).", min=1)
    max_events: int | None = setting(None, "Stop after consuming this many events (default: run until SIGTERM).")
    report_every_seconds: float = setting(
        30.0, "A progress line (events, events/s, lag, classes, accuracy per level) this often; every 2 s at most on "
        "a terminal.", min=0.1)
    http_host: str = setting("127.0.0.1", "Address of /predict, /healthz, /readyz, /metrics, /classes.")
    http_port: int | None = setting(8080, "Port of the HTTP server (0: none).", type=int, min=0,
                                    parse=lambda port: port or None, shown=lambda port: port or 0)
    http: HttpLimits = field(default_factory=HttpLimits)
    serving_refresh_seconds: float = setting(
        1.0, "HTTP predictions use a copy of the model at most this old (plus one micro-batch).", min=0.0)
    metrics: bool = setting(True, "No /metrics and no drift detection (to measure their cost).", option="no_metrics",
                            flag=True, parse=lambda off: not off, shown=lambda on: not on)
    max_output_bytes: int = setting(
        1_000_000, "Every record written fits this (keep it at or below the output topics' max.message.bytes); a "
        "dead letter's copy of the input is cut to fit.", min=16_384)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    trained_ids_log: Path | None = setting(
        None, "Keep a file of the event ids in the model's lineage (JSON lines: a header, then one id per labelled "
        "event). Trainers of one model store keep the same file, on shared storage.")
    reset_offsets: str | None = setting(
        None, "earliest or latest: where to read when the checkpoint's offsets cannot be trusted (the broker's input "
        "topic is another one: a new cluster, a topic made anew) or every checkpoint is unusable (a new model). "
        "Without it such a start is refused.", parse=_offset_reset)
    take_over_store: bool = setting(
        False, "Write a model store (or checkpoint directory) that another consumer group owns, or whose trainers "
        "keep another trained-ids log: this daemon's group and log become its owners.", flag=True)
    role: str = setting(
        "single", "single: one daemon per group (it locks its checkpoint directory). trainer: one active trainer per "
        "group, every other member a hot standby that takes over when it dies (needs a shared --model-store).",
        parse=_one_of(ROLES, "role"))
    model_store: str | None = setting(
        None, "Where checkpoints and serving snapshots live, shared by trainers and predictor replicas: a directory "
        "or s3://bucket/prefix (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Without it: "
        "--checkpoint-dir, and no snapshots; not both.")
    snapshot_every_seconds: float = setting(
        5.0, "With --model-store: publish a serving snapshot for predictor replicas this often.", min=0.0)
    publish_predictions: bool = setting(
        True, "Publish no predictions (predictor replicas do); prequential accuracy is still measured.",
        option="no_predictions", flag=True, parse=lambda off: not off, shown=lambda on: not on)
    train_budget: str = setting(
        "auto", "Gradient steps the daemon may take: auto (train on less while the consumer lag would take over 2 s "
        "to drain, so that predictions keep up with the stream), unlimited (every labelled event, however far "
        "behind), or a number of steps per second. Skipped events are still predicted and enter the replay memory.",
        parse=_budget)
    torch_threads: int = setting(0, "Threads torch computes with (0: one per core, less one for Kafka I/O and HTTP).",
                                 min=0)  # set by the command, per process


@dataclass(frozen=True)
class ReplicaConfig:
    input_topic: str = setting("hle-events", "Topic of events to predict.")
    predictions_topic: str = setting("hle-predictions", "Topic the predictions go to.")
    group_id: str = setting("hle-stream-predictors", "The replicas' consumer group (not the trainers').",
                            env="HLE_SERVE_GROUP_ID")  # replicas split the partitions among them
    max_batch: int = setting(256, "Events per prediction batch.", min=1)
    refresh_seconds: float = setting(1.0, "How often the store is asked for a newer snapshot.", min=0.05)
    commit_every_seconds: float = 5.0
    confidence_threshold: float | None = setting(
        None, "Predicted path stops below this probability (default: the trainer's, calibrated to its "
        "--target-precision and carried by its snapshot; 0.5 until then).")
    max_message_bytes: int = setting(4 << 20, "Larger input values are skipped.", min=1)
    max_abs_feature: float = setting(DEFAULT_MAX_ABS_FEATURE, "Float features beyond ± this are skipped.", min=0.0)
    http_host: str = setting("127.0.0.1", "Address of /predict, /healthz, /readyz, /metrics.")
    http_port: int | None = setting(8081, "Port of the HTTP server (0: none).", type=int, min=0,
                                    parse=lambda port: port or None, shown=lambda port: port or 0)
    http: HttpLimits = field(default_factory=lambda: HttpLimits(predict_share=0.8))  # predicting is its job
    max_events: int | None = setting(None, "Stop after consuming this many events (default: until SIGTERM).")
    torch_threads: int = setting(1, "Threads torch predicts with (0: torch's default).", min=0)  # set by the command


RUN_SECTIONS: tuple[tuple[str, Any], ...] = (("kafka", KafkaSettings()), ("daemon", DaemonConfig()),
                                             ("processing", ProcessingConfig()), ("learner", LearnerConfig()),
                                             ("http", HttpLimits()))
"""Where ``hle-stream run``'s options live (with their defaults), in the order they are listed."""
SERVE_SECTIONS: tuple[tuple[str, Any], ...] = (("kafka", KafkaSettings()), ("replica", ReplicaConfig()),
                                               ("http", ReplicaConfig().http))
"""The same for ``hle-stream serve``: a replica's own defaults (its HTTP limits included)."""


@dataclass(frozen=True)
class CommandSetting:
    """One option of a command (``run``, ``serve``), as derived from its field."""

    name: str  # the option without dashes, as a Python name: --http-port is http_port
    section: str  # which settings object it is a field of
    field: str
    type: Any  # on the command line
    default: Any  # on the command line
    help: str
    min: float | None = None
    max: float | None = None
    flag: bool = False
    secret: bool = False
    parse: Callable[[Any], Any] | None = None
    env_name: str | None = None

    @property
    def env(self) -> str:
        return self.env_name or "HLE_" + self.name.upper()

    def to_field(self, value: Any) -> Any:
        return value if self.parse is None else self.parse(value)


def _option_type(annotation: Any) -> Any:
    """``int | None`` → ``Optional[int]`` (what typer reads); other annotations as they are."""
    if isinstance(annotation, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        return Optional[members[0]] if len(members) == 1 else annotation
    return annotation


def _command_setting(section: str, spec: dataclasses.Field, annotation: Any, default: Any) -> CommandSetting | None:
    declared = spec.metadata.get(SETTING)
    if declared is None and spec.metadata.get("run") is not None:  # a learner option that run also takes
        declared = {"help": spec.metadata["help"], **spec.metadata["run"]}
    if declared is None:
        return None
    shown = declared.get("shown")
    return CommandSetting(name=declared.get("option") or spec.name, section=section, field=spec.name,
                      type=declared.get("type") or _option_type(annotation),
                      default=shown(default) if shown else default, help=declared.get("help", ""),
                      min=declared.get("min"), max=declared.get("max"), flag=declared.get("flag", False),
                      secret=declared.get("secret", False), parse=declared.get("parse"), env_name=declared.get("env"))


def command_settings(sections: tuple[tuple[str, Any], ...]) -> tuple[CommandSetting, ...]:
    """The options of a command whose settings are ``sections`` (name, settings object with the
    command's defaults): one per field declared as a setting, in order."""
    found = []
    for section, defaults in sections:
        hints = typing.get_type_hints(type(defaults))
        for spec in dataclasses.fields(defaults):
            command_setting = _command_setting(section, spec, hints[spec.name], getattr(defaults, spec.name))
            if command_setting is not None:
                found.append(command_setting)
    return tuple(found)


def run_settings() -> tuple[CommandSetting, ...]:
    """Every option of ``hle-stream run`` but ``--config`` and ``--print-config``."""
    return command_settings(RUN_SECTIONS)


def serve_settings() -> tuple[CommandSetting, ...]:
    """Every option of ``hle-stream serve`` but ``--model-store``."""
    return command_settings(SERVE_SECTIONS)
