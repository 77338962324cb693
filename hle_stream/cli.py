"""The ``hle-stream`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Only names for help texts at module level: torch, kafka-python and the learner load inside the
# command that needs them, so that every --help answers at once (benchmarks/startup.py).
from hle_stream.core.methods import DEFAULT_METHOD
from hle_stream.core.methods import PRESETS as METHODS
from hle_stream.eval.bench.presets import PRESETS
from hle_stream.eval.datasets import DATASETS, dataset_folder, load_dataset, save_npz
from hle_stream.eval.streams import SCENARIOS

# rich_markup_mode=None: plain help that never cuts an option's or a variable's name at 80 columns
app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Online continual learning on hierarchical label expansion.")
console = Console(stderr=True)
BROKER_WAIT_S = 5.0  # produce and tail: how long a broker may take to answer before exit code 4


def _split_list(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"give at least one {what}")
    if allowed is not None:
        unknown = [v for v in items if v not in allowed]
        if unknown:
            raise typer.BadParameter(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items


LEARNER_HELP = ("A learner option over the method's preset, as KEY=VALUE (e.g. vector_dropout=0); repeat it for "
                "more. 'hle-stream run --print-config' lists every option; docs/method.md says what each does.")


def _learner_option_pairs(texts: list[str] | None) -> dict[str, object]:
    """``--learner KEY=VALUE`` values, typed and checked (one line naming a bad key or value)."""
    from hle_stream.core.methods import LearnerOptionError, parse_assignment

    try:
        return dict(parse_assignment(text) for text in texts or ())
    except LearnerOptionError as err:
        raise typer.BadParameter(str(err), param_hint="--learner") from None


def _check_method(method: str, overrides: dict[str, object]) -> None:
    from hle_stream.core.methods import LearnerOptionError, resolve

    try:
        resolve(method, overrides)
    except LearnerOptionError as err:
        raise typer.BadParameter(str(err)) from None


@app.command()
def bench(
    dataset: Annotated[Optional[str], typer.Option(help=f"Built-in dataset: {', '.join(DATASETS)}.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Your own dataset as .npz (x, label[, split]); see docs/events.md.", exists=True, dir_okay=False)] = None,
    scenario: Annotated[str, typer.Option(help=f"Comma-separated HLE scenarios: {', '.join(SCENARIOS)}.")] = "multi-depth",
    methods: Annotated[str, typer.Option(help=f"Comma-separated methods ({', '.join(METHODS)}) or names of --ablations specs.")] = f"er,{DEFAULT_METHOD}",
    learner: Annotated[Optional[list[str]], typer.Option(help=LEARNER_HELP + " Applies to every method of the run.")] = None,
    ablations: Annotated[Optional[Path], typer.Option(help="TOML file of named specs, each a method plus learner options (benchmarks/ablations.toml in the repository).", exists=True, dir_okay=False)] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    preset: Annotated[str, typer.Option(help=f"Size and settings: {', '.join(PRESETS)}.")] = "quick",
    out: Annotated[Path, typer.Option(help="Output folder (report.json, report.md, accuracy.png).")] = Path("bench-out"),
    jobs: Annotated[int, typer.Option(help="Runs in parallel (each gets cores/jobs threads; float sums depend on the thread count, so results differ slightly between --jobs values: compare tables made with the same one).", min=1)] = 1,
    data_root: Annotated[Optional[Path], typer.Option(help="Folder of the built-in datasets.", envvar="HLE_DATA_ROOT")] = None,
    label_delay: Annotated[int, typer.Option(help="Labels arrive this many events after their samples: each sample is predicted (and scored) on arrival and learned when its label comes (0: with it).", min=0)] = 0,
    memory_size: Annotated[Optional[int], typer.Option(help="Replay memory in samples (default: the preset's).", min=1)] = None,
    memory_share: Annotated[Optional[float], typer.Option(help="Replay memory as a share of the stream's length, e.g. 0.02 (default: the preset's).", min=0.0001, max=1.0)] = None,
    online_iter: Annotated[Optional[float], typer.Option(help="Gradient steps per stream sample (default: the preset's); the importance period follows it.", min=0.01)] = None,
) -> None:
    """Run scenarios × methods × seeds on an HLE stream and write a report per scenario."""
    from dataclasses import asdict

    from hle_stream.eval.bench.orchestrate import DataSource, run_all
    from hle_stream.eval.bench.presets import customised
    from hle_stream.eval.bench.report import build_report, write_report
    from hle_stream.eval.bench.runner import RunSpec

    if (dataset is None) == (data is None):
        raise typer.BadParameter("give exactly one of --dataset or --data")
    if dataset is not None and dataset not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {dataset}; choose from {', '.join(DATASETS)}")
    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset}; choose from {', '.join(PRESETS)}")
    if memory_size is not None and memory_share is not None:
        raise typer.BadParameter("give --memory-size or --memory-share, not both")
    settings = customised(PRESETS[preset], memory_size, memory_share, online_iter)
    scenarios = _split_list(scenario, SCENARIOS, "scenario")
    from hle_stream.eval.bench.specs import BenchSpecError, learner_specs

    try:
        learner_runs = learner_specs(_split_list(methods, None, "method"), _learner_option_pairs(learner), ablations)
    except BenchSpecError as err:
        raise typer.BadParameter(str(err), param_hint="--methods") from None
    method_names = list(learner_runs)
    try:
        seed_values = [int(s) for s in _split_list(seeds, None, "seed")]
    except ValueError:
        raise typer.BadParameter("seeds must be integers, e.g. 0,1,2") from None
    if dataset is not None:
        dataset_folder(dataset, data_root)  # missing files: one line now, not after the progress bars
    source = DataSource(dataset, data, data_root)
    specs = [RunSpec(sc, m, s, label_delay, *learner_runs[m]) for sc in scenarios for m in method_names
             for s in seed_values]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {spec: bar.add_task(f"{spec.scenario} {spec.method} seed {spec.seed}", total=None) for spec in specs}

        def show(spec: "RunSpec", position: int, total: int) -> None:
            bar.update(tasks[spec], completed=position, total=total)
            if position >= total:  # also visible where the bar is not (a log file, CI)
                console.print(f"finished {spec.scenario} {spec.method} seed {spec.seed}")

        runs = run_all(source, settings, specs, jobs, show)
    for sc in scenarios:
        config = {"dataset": dataset or str(data), "scenario": sc, "methods": method_names, "seeds": seed_values,
                  "label_delay": label_delay, "preset": preset, "preset_settings": asdict(settings)}
        target = out / sc if len(scenarios) > 1 else out
        paths = write_report(build_report([r for r in runs if r["scenario"] == sc], config), target)
        typer.echo(paths[1].read_text())
        console.print(f"wrote {', '.join(str(p) for p in paths)}")


@app.command("export-npz")
def export_npz(
    dataset: Annotated[str, typer.Option(help=f"Built-in dataset: {', '.join(DATASETS)}.")],
    out: Annotated[Path, typer.Option(help="The .npz file to write.")],
    data_root: Annotated[Optional[Path], typer.Option(help="Folder of the built-in datasets.", envvar="HLE_DATA_ROOT")] = None,
) -> None:
    """Write a built-in dataset in the user .npz format (x, label, split): a template for your own."""
    ds = load_dataset(dataset, data_root=data_root)
    save_npz(ds, out)
    console.print(f"wrote {out}: {len(ds.x_train)} train + {len(ds.x_test)} test samples, "
                  f"classes per level {ds.classes_per_level()}")


LEARNER_TABLE = "hle_stream.learner_table"  # where the config file's [learner] table waits for run()


def _read_config_file(ctx: typer.Context, param: typer.CallbackParam, path: Optional[Path]) -> Optional[Path]:
    """``--config``: the file's values become the defaults of the other options, below their
    environment variables and the command line (click's ``default_map``)."""
    if path is not None:
        from hle_stream.service.settings import SettingsError, read_config_file

        try:
            values = read_config_file(path)
            ctx.meta[LEARNER_TABLE] = values.pop("learner", {})  # merged with --learner, not replaced by it
            ctx.default_map = {**(ctx.default_map or {}), **values}
        except SettingsError as err:
            raise typer.BadParameter(str(err)) from None
    return path


@app.command()
def run(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of settings (option = value, e.g. memory-size = 500); the command line and HLE_* variables override it.", envvar="HLE_CONFIG", is_eager=True, callback=_read_config_file, dir_okay=False)] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved settings, each with where it came from, as a config file, and exit.")] = False,
    bootstrap_servers: Annotated[str, typer.Option(help="Kafka bootstrap servers, comma-separated.", envvar="HLE_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
    input_topic: Annotated[str, typer.Option(help="Topic of labelled/unlabelled events (contract v1).", envvar="HLE_INPUT_TOPIC")] = "hle-events",
    predictions_topic: Annotated[str, typer.Option(help="Topic the coarse-to-fine predictions go to.", envvar="HLE_PREDICTIONS_TOPIC")] = "hle-predictions",
    dead_letter_topic: Annotated[str, typer.Option(help="Topic for events that fail to parse or validate.", envvar="HLE_DEAD_LETTER_TOPIC")] = "hle-dead-letters",
    group_id: Annotated[str, typer.Option(help="Kafka consumer group.", envvar="HLE_GROUP_ID")] = "hle-stream",
    input_partitions: Annotated[int, typer.Option(help="Partitions of the input topic when the daemon creates it.", envvar="HLE_INPUT_PARTITIONS", min=1)] = 1,
    checkpoint_dir: Annotated[Path, typer.Option(help="Where checkpoints are written and resumed from.", envvar="HLE_CHECKPOINT_DIR")] = Path("checkpoints"),
    checkpoint_every_events: Annotated[int, typer.Option(help="Checkpoint (then commit) after this many events…", envvar="HLE_CHECKPOINT_EVERY_EVENTS", min=1)] = 5000,
    checkpoint_every_seconds: Annotated[float, typer.Option(help="…or after this many seconds, whichever comes first.", envvar="HLE_CHECKPOINT_EVERY_SECONDS")] = 60.0,
    method: Annotated[str, typer.Option(help=f"Learner: {', '.join(METHODS)}.", envvar="HLE_METHOD")] = DEFAULT_METHOD,
    learner: Annotated[Optional[list[str]], typer.Option(help=LEARNER_HELP + " Added to the config file's [learner] table.", envvar="HLE_LEARNER")] = None,
    memory_size: Annotated[int, typer.Option(help="Replay memory capacity (samples).", envvar="HLE_MEMORY_SIZE", min=1)] = 500,
    batch_size: Annotated[int, typer.Option(help="Training batch (half stream, half memory).", envvar="HLE_BATCH_SIZE", min=2)] = 16,
    importance_probe: Annotated[int, typer.Option(help="PL-FMS: memory samples re-scored per importance update (0: all of them, the reference rule).", envvar="HLE_IMPORTANCE_PROBE", min=0)] = 64,
    confidence_threshold: Annotated[float, typer.Option(help="Predicted path stops below this probability (with --target-precision, until the labels have calibrated one).", envvar="HLE_CONFIDENCE_THRESHOLD")] = 0.5,
    target_precision: Annotated[float, typer.Option(help="Keep this share of served path nodes right: the threshold becomes the lowest whose precision over the last 2,000 labelled path nodes reaches it, so paths go as deep as that allows (0: --confidence-threshold stays fixed).", envvar="HLE_TARGET_PRECISION", min=0.0, max=1.0)] = 0.95,
    max_batch: Annotated[int, typer.Option(help="Events per micro-batch (predicted, then learned).", envvar="HLE_MAX_BATCH", min=1)] = 64,
    http_host: Annotated[str, typer.Option(help="Address of /predict, /healthz, /readyz, /metrics, /classes.", envvar="HLE_HTTP_HOST")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="Port of the HTTP server (0: none).", envvar="HLE_HTTP_PORT", min=0)] = 8080,
    no_metrics: Annotated[bool, typer.Option("--no-metrics", help="No /metrics and no drift detection (to measure their cost).", envvar="HLE_NO_METRICS")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.", envvar="HLE_DEVICE")] = "auto",
    max_events: Annotated[Optional[int], typer.Option(help="Stop after consuming this many events (default: run until SIGTERM).", envvar="HLE_MAX_EVENTS")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="Feature shape, e.g. 1,28,28 (default: the first valid event's).", envvar="HLE_INPUT_SHAPE")] = None,
    input_dtype: Annotated[Optional[str], typer.Option(help="Feature dtype, float32 or uint8 (default: the first valid event's).", envvar="HLE_INPUT_DTYPE")] = None,
    max_classes: Annotated[int, typer.Option(help="Class cap over all levels; labels past it are dead-lettered.", envvar="HLE_MAX_CLASSES", min=1)] = 10_000,
    max_message_bytes: Annotated[int, typer.Option(help="Larger input values are dead-lettered (too_large).", envvar="HLE_MAX_MESSAGE_BYTES", min=1)] = 4 << 20,
    max_abs_feature: Annotated[float, typer.Option(help="Float features beyond ± this are dead-lettered (out_of_range): huge values would turn the weights to NaN.", envvar="HLE_MAX_ABS_FEATURE", min=0.0)] = 1e6,
    dedupe_window: Annotated[int, typer.Option(help="A record whose id is among this many latest ids with features is dead-lettered (duplicate_id); 0: off.", envvar="HLE_DEDUPE_WINDOW", min=0)] = 100_000,
    join_window: Annotated[int, typer.Option(help="Keep the features of this many latest events for a label event ({\"id\", \"label\"} without features) that comes later, or refines the label; 0: no label events (such a record is dead-lettered as missing_field).", envvar="HLE_JOIN_WINDOW", min=0)] = 10_000,
    join_max_age_seconds: Annotated[float, typer.Option(help="... and for at most this long; a later label is dead-lettered as label_expired.", envvar="HLE_JOIN_MAX_AGE_SECONDS", min=0.0)] = 3600.0,
    refinements: Annotated[str, typer.Option(help="A finer label for an event learned earlier (a, then a/b): relearn (learn the sample again at its new label; its coarse copy in the replay memory stays) or upgrade (change the copy in the replay memory in place; costs the coarse level, see docs/events.md).", envvar="HLE_REFINEMENTS")] = "relearn",
    max_output_bytes: Annotated[int, typer.Option(help="Every record written fits this (keep it at or below the output topics' max.message.bytes); a dead letter's copy of the input is cut to fit.", envvar="HLE_MAX_OUTPUT_BYTES", min=16_384)] = 1_000_000,
    trained_ids_log: Annotated[Optional[Path], typer.Option(help="Keep a file of the event ids in the model's lineage (one line per labelled event).", envvar="HLE_TRAINED_IDS_LOG")] = None,
    http_token: Annotated[Optional[str], typer.Option(help="Bearer token that /predict, /classes and /metrics require; needed when --http-host is not loopback.", envvar="HLE_HTTP_TOKEN")] = None,
    http_max_body_bytes: Annotated[int, typer.Option(help="Larger /predict bodies are refused (413).", envvar="HLE_HTTP_MAX_BODY_BYTES", min=1)] = 1 << 20,
    http_max_events: Annotated[int, typer.Option(help="More events in one /predict request are refused (413).", envvar="HLE_HTTP_MAX_EVENTS", min=1)] = 256,
    http_timeout_seconds: Annotated[float, typer.Option(help="Deadline for a request's head, and again for its body (408).", envvar="HLE_HTTP_TIMEOUT_SECONDS", min=0.1)] = 10.0,
    http_max_concurrent: Annotated[int, typer.Option(help="/predict requests in flight at once; more get 503 with Retry-After.", envvar="HLE_HTTP_MAX_CONCURRENT", min=1)] = 8,
    http_max_connections: Annotated[int, typer.Option(help="Open HTTP connections; more are closed at once.", envvar="HLE_HTTP_MAX_CONNECTIONS", min=1)] = 512,
    http_predict_share: Annotated[float, typer.Option(help="Share of one core's time /predict may use (over 5 s); beyond it 503, so that learning keeps its CPU.", envvar="HLE_HTTP_PREDICT_SHARE", min=0.01, max=16.0)] = 0.1,
    serving_refresh_seconds: Annotated[float, typer.Option(help="HTTP predictions use a copy of the model at most this old (plus one micro-batch).", envvar="HLE_SERVING_REFRESH_SECONDS", min=0.0)] = 1.0,
    security_protocol: Annotated[str, typer.Option(help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.", envvar="HLE_SECURITY_PROTOCOL")] = "PLAINTEXT",
    sasl_mechanism: Annotated[Optional[str], typer.Option(help="e.g. PLAIN, SCRAM-SHA-256.", envvar="HLE_SASL_MECHANISM")] = None,
    sasl_username: Annotated[Optional[str], typer.Option(envvar="HLE_SASL_USERNAME")] = None,
    sasl_password: Annotated[Optional[str], typer.Option(envvar="HLE_SASL_PASSWORD")] = None,
    ssl_cafile: Annotated[Optional[str], typer.Option(envvar="HLE_SSL_CAFILE")] = None,
    ssl_certfile: Annotated[Optional[str], typer.Option(envvar="HLE_SSL_CERTFILE")] = None,
    ssl_keyfile: Annotated[Optional[str], typer.Option(envvar="HLE_SSL_KEYFILE")] = None,
    session_timeout_ms: Annotated[int, typer.Option(help="Consumer group session; the local broker holds each group join for half of it, so keep it short there.", envvar="HLE_SESSION_TIMEOUT_MS")] = 6000,
    heartbeat_interval_ms: Annotated[int, typer.Option(envvar="HLE_HEARTBEAT_INTERVAL_MS")] = 1000,
    report_every_seconds: Annotated[float, typer.Option(help="A progress line (events, events/s, lag, classes, accuracy per level) this often; every 2 s at most on a terminal.", envvar="HLE_REPORT_EVERY_SECONDS", min=0.1)] = 30.0,
    broker_wait_seconds: Annotated[float, typer.Option(help="At start, how long to wait for a broker before exiting with code 4 (a broker lost later is waited for, not ready meanwhile).", envvar="HLE_BROKER_WAIT_SECONDS", min=0.0)] = 5.0,
    role: Annotated[str, typer.Option(help="single: one daemon per group (it locks its checkpoint directory). trainer: one active trainer per group, every other member a hot standby that takes over when it dies (needs a shared --model-store).", envvar="HLE_ROLE")] = "single",
    model_store: Annotated[Optional[str], typer.Option(help="Where checkpoints and serving snapshots live, shared by trainers and predictor replicas: a directory or s3://bucket/prefix (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Default: --checkpoint-dir, no snapshots.", envvar="HLE_MODEL_STORE")] = None,
    snapshot_every_seconds: Annotated[float, typer.Option(help="With --model-store: publish a serving snapshot for predictor replicas this often.", envvar="HLE_SNAPSHOT_EVERY_SECONDS", min=0.0)] = 5.0,
    train_budget: Annotated[str, typer.Option(help="Gradient steps the daemon may take: auto (train on less while the consumer lag would take over 2 s to drain, so that predictions keep up with the stream), unlimited (every labelled event, however far behind), or a number of steps per second. Skipped events are still predicted and enter the replay memory.", envvar="HLE_TRAIN_BUDGET")] = "auto",
    torch_threads: Annotated[int, typer.Option(help="Threads torch computes with (0: one per core, less one for Kafka I/O and HTTP).", envvar="HLE_TORCH_THREADS", min=0)] = 0,
    no_predictions: Annotated[bool, typer.Option("--no-predictions", help="Publish no predictions (predictor replicas do); prequential accuracy is still measured.", envvar="HLE_NO_PREDICTIONS")] = False,
) -> None:
    """Run the daemon: consume events, predict every one, learn from the labelled ones, checkpoint, commit.

    SIGTERM finishes the batch in hand, writes a checkpoint, commits and exits 0.
    """
    import dataclasses
    import logging
    import signal
    import sys

    import torch

    from hle_stream.core.device import default_torch_threads
    from hle_stream.service.checkpoint import (
        CheckpointDirLockedError,
        IncompatibleCheckpointError,
        UnreadableCheckpointError,
    )
    from hle_stream.service.checkpointer import CheckpointMismatchError
    from hle_stream.service.daemon import EXIT_NO_FINAL_CHECKPOINT, EXIT_REFUSED, FinalCheckpointFailed
    from hle_stream.service.kafka_daemon import KafkaDaemon
    from hle_stream.service.serving import HttpStartError, require_auth_off_loopback
    from hle_stream.service.settings import OPTIONS, SettingsError, build, render

    values = {option: ctx.params[option] for option in OPTIONS}
    file_table, by_name = ctx.meta.get(LEARNER_TABLE, {}), _learner_option_pairs(learner)
    values["learner"] = {**file_table, **by_name}
    try:
        settings, daemon_config = build(values)
    except SettingsError as err:
        raise typer.BadParameter(str(err)) from None
    if print_config:
        names = {"COMMANDLINE": "command line", "ENVIRONMENT": "environment", "DEFAULT_MAP": f"config file {config}"}
        sources = {o: names.get(getattr(ctx.get_parameter_source(o), "name", ""), "default") for o in OPTIONS}
        learner_sources = {key: f"config file {config} [learner]" for key in file_table}
        learner_sources.update({key: f"--learner ({sources['learner']})" for key in by_name})
        typer.echo(render(values, sources, daemon_config.processing, learner_sources))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines are per connection
    if sys.stderr.isatty():  # someone is watching: live progress
        daemon_config = dataclasses.replace(daemon_config,
                                            report_every_seconds=min(daemon_config.report_every_seconds, 2.0))
    torch.set_num_threads(daemon_config.torch_threads or default_torch_threads())
    try:
        if daemon_config.http_port is not None:
            require_auth_off_loopback(daemon_config.http_host, daemon_config.http)
        daemon = KafkaDaemon(settings, daemon_config)
        signal.signal(signal.SIGTERM, lambda *_: daemon.request_stop())
        daemon.run()
    except KeyboardInterrupt:
        pass
    except (ValueError, IncompatibleCheckpointError, CheckpointMismatchError, CheckpointDirLockedError,
            UnreadableCheckpointError, HttpStartError) as err:  # refused, not guessed at
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    except FinalCheckpointFailed as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_NO_FINAL_CHECKPOINT) from None


@app.command()
def serve(
    model_store: Annotated[str, typer.Option(help="The trainer's --model-store: a directory or s3://bucket/prefix.", envvar="HLE_MODEL_STORE")],
    bootstrap_servers: Annotated[str, typer.Option(help="Kafka bootstrap servers, comma-separated.", envvar="HLE_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
    input_topic: Annotated[str, typer.Option(help="Topic of events to predict.", envvar="HLE_INPUT_TOPIC")] = "hle-events",
    predictions_topic: Annotated[str, typer.Option(help="Topic the predictions go to.", envvar="HLE_PREDICTIONS_TOPIC")] = "hle-predictions",
    group_id: Annotated[str, typer.Option(help="The replicas' consumer group (not the trainers').", envvar="HLE_SERVE_GROUP_ID")] = "hle-stream-predictors",
    http_host: Annotated[str, typer.Option(help="Address of /predict, /healthz, /readyz, /metrics.", envvar="HLE_HTTP_HOST")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="Port of the HTTP server (0: none).", envvar="HLE_HTTP_PORT", min=0)] = 8081,
    http_token: Annotated[Optional[str], typer.Option(help="Bearer token /predict and /metrics require; needed when --http-host is not loopback.", envvar="HLE_HTTP_TOKEN")] = None,
    http_predict_share: Annotated[float, typer.Option(help="Share of one core's time /predict may use (over 5 s); beyond it 503.", envvar="HLE_HTTP_PREDICT_SHARE", min=0.01, max=16.0)] = 0.8,
    refresh_seconds: Annotated[float, typer.Option(help="How often the store is asked for a newer snapshot.", envvar="HLE_REFRESH_SECONDS", min=0.05)] = 1.0,
    max_batch: Annotated[int, typer.Option(help="Events per prediction batch.", envvar="HLE_MAX_BATCH", min=1)] = 256,
    confidence_threshold: Annotated[Optional[float], typer.Option(help="Predicted path stops below this probability (default: the trainer's, calibrated to its --target-precision and carried by its snapshot; 0.5 until then).", envvar="HLE_CONFIDENCE_THRESHOLD")] = None,
    max_events: Annotated[Optional[int], typer.Option(help="Stop after consuming this many events (default: until SIGTERM).", envvar="HLE_MAX_EVENTS")] = None,
    session_timeout_ms: Annotated[int, typer.Option(envvar="HLE_SESSION_TIMEOUT_MS")] = 6000,
    heartbeat_interval_ms: Annotated[int, typer.Option(envvar="HLE_HEARTBEAT_INTERVAL_MS")] = 1000,
    torch_threads: Annotated[int, typer.Option(help="Threads torch predicts with (0: torch's default).", envvar="HLE_TORCH_THREADS", min=0)] = 1,
) -> None:
    """Run a predictor replica: predict every event of its share of the input partitions with the
    newest serving snapshot of the model store, publish the predictions, serve POST /predict.

    Start as many as the input topic has partitions; they need a trainer (hle-stream run
    --model-store ...) publishing snapshots. SIGTERM delivers, commits and exits 0.
    """
    import logging
    import signal

    import torch

    from connectors.blob_store import open_blob_store
    from connectors.settings import KafkaSettings
    from hle_stream.service.kafka_daemon import replica_connector
    from hle_stream.service.replica import PredictorReplica, ReplicaConfig
    from hle_stream.service.serving import HttpLimits, HttpStartError, require_auth_off_loopback

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    settings = KafkaSettings(bootstrap_servers=bootstrap_servers, session_timeout_ms=session_timeout_ms,
                             heartbeat_interval_ms=heartbeat_interval_ms)
    config = ReplicaConfig(input_topic=input_topic, predictions_topic=predictions_topic, group_id=group_id,
                           max_batch=max_batch, refresh_seconds=refresh_seconds,
                           confidence_threshold=confidence_threshold, http_host=http_host,
                           http_port=http_port or None, max_events=max_events,
                           http=HttpLimits(token=http_token or None, predict_share=http_predict_share))
    try:
        if config.http_port is not None:
            require_auth_off_loopback(config.http_host, config.http)
        replica = PredictorReplica(config, open_blob_store(model_store), replica_connector(settings, config))
        signal.signal(signal.SIGTERM, lambda *_: replica.request_stop())
        replica.run()
    except KeyboardInterrupt:
        pass
    except (ValueError, HttpStartError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Stream this many training samples, then stop.", min=1)] = 20000,
    dataset: Annotated[str, typer.Option(help=f"Built-in dataset: {', '.join(DATASETS)}.")] = "fashion-mnist",
    scenario: Annotated[str, typer.Option(help=f"HLE scenario: {', '.join(SCENARIOS)}.")] = "multi-depth",
    method: Annotated[str, typer.Option(help=f"Learner: {', '.join(METHODS)}.")] = DEFAULT_METHOD,
    learner: Annotated[Optional[list[str]], typer.Option(help=LEARNER_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the stream.")] = 0,
    report_every_seconds: Annotated[float, typer.Option(help="Print a progress line this often.", min=0.1)] = 2.0,
    picture: Annotated[Path, typer.Option(help="Where the accuracy-over-time picture goes at the end.")] = Path("hle-demo-accuracy.png"),
    with_prometheus: Annotated[bool, typer.Option("--with-prometheus", help="Also run Prometheus (if installed) with the shipped config and rules, scraping the demo.")] = False,
    data_root: Annotated[Optional[Path], typer.Option(help="Folder of the built-in datasets.", envvar="HLE_DATA_ROOT")] = None,
) -> None:
    """The embedded default: a local broker, the producer simulation and the daemon, in one command.

    Prints progress every few seconds (events, events/s, lag, classes and prequential accuracy per
    level), serves the daemon's HTTP on a free port, and draws accuracy over time at the end; stops
    after --events or on Ctrl-C, and shuts everything down.
    """
    from hle_stream.demo import DemoSettings, run_demo

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {scenario}; choose from {', '.join(SCENARIOS)}")
    overrides = _learner_option_pairs(learner)
    _check_method(method, overrides)
    _find_or_fetch(dataset, data_root)
    run_demo(DemoSettings(dataset, scenario, method, seed, events, report_every_seconds, data_root, picture,
                          with_prometheus, tuple(overrides.items())),
             say=lambda line: typer.echo(line))


def _find_or_fetch(dataset: str, data_root: Optional[Path]) -> None:
    """The demo's data: found where ``dataset_folder`` looks, else fetched from its publisher when
    the network allows (one line saying both ways to get it when it does not)."""
    from hle_stream.eval.datasets import DatasetUnavailable
    from hle_stream.eval.datasets.sources import SOURCES, FetchError, data_cache, fetch
    from hle_stream.user_errors import UserError

    try:
        dataset_folder(dataset, data_root)
    except DatasetUnavailable as missing:
        if dataset not in SOURCES:
            raise
        console.print(f"{dataset} is not on this machine: fetching it into {data_cache()} …")
        try:
            fetch(dataset, timeout=20.0)
        except FetchError as err:
            raise UserError(f"{err}. {missing}") from None


data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="The built-in datasets: fetch one from its publisher into the user cache.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="fashion-mnist.")],
    url: Annotated[Optional[str], typer.Option(help="A mirror's folder of the files (default: the publisher's).")] = None,
) -> None:
    """Download a dataset into the user cache (~/.cache/hle-stream/data, or HLE_CACHE_DIR/data),
    checked against the publisher's checksums; a complete copy already there is kept."""
    from hle_stream.eval.datasets.sources import fetch

    folder = fetch(name, url)
    console.print(f"{name}: {folder}")


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", envvar="HLE_BROKER_PORT")] = 9092,
) -> None:
    """Run a local Kafka-protocol broker (Tansu, in memory) on 127.0.0.1 until Ctrl-C or SIGTERM.

    For development and tests; production points --bootstrap-servers at a real Kafka cluster.
    """
    import signal
    import threading

    from connectors.broker import LocalBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    running = LocalBroker(port).start()
    console.print(f"broker listening on {running.bootstrap_servers} (Ctrl-C stops it; data lives in memory only)")
    try:
        while not stop.wait(0.5) and running.process.poll() is None:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
    if running.process.returncode not in (0, -signal.SIGINT) and not stop.is_set():
        raise typer.Exit(1)


@app.command()
def produce(
    topic: Annotated[str, typer.Option(help="Topic to write events to.", envvar="HLE_INPUT_TOPIC")] = "hle-events",
    bootstrap_servers: Annotated[str, typer.Option(help="Kafka bootstrap servers.", envvar="HLE_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
    dataset: Annotated[Optional[str], typer.Option(help=f"Built-in dataset: {', '.join(DATASETS)}.")] = "fashion-mnist",
    data: Annotated[Optional[Path], typer.Option(help="Your own dataset as .npz (overrides --dataset).", exists=True, dir_okay=False)] = None,
    scenario: Annotated[str, typer.Option(help=f"HLE scenario: {', '.join(SCENARIOS)}.")] = "multi-depth",
    seed: Annotated[int, typer.Option(help="Seed of the stream order.")] = 0,
    events: Annotated[Optional[int], typer.Option(help="Stream at most this many training samples (stratified).")] = None,
    rate: Annotated[Optional[float], typer.Option(help="Events per second (default: as fast as possible).")] = None,
    unlabelled_fraction: Annotated[float, typer.Option(help="Share of events sent without a label.", min=0.0, max=1.0)] = 0.0,
    partitions: Annotated[int, typer.Option(help="Partitions if the topic must be created.", min=1)] = 1,
    data_root: Annotated[Optional[Path], typer.Option(help="Folder of the built-in datasets.", envvar="HLE_DATA_ROOT")] = None,
    jsonl: Annotated[Optional[str], typer.Option(help="Send your own events instead: a file of JSON lines, one event of the contract per line ('-': standard input).")] = None,
    label_delay: Annotated[int, typer.Option(help="Send each label as a label event (id and label, no features) this many events after its event (0: labels travel with their events).", min=0)] = 0,
    label_jitter: Annotated[int, typer.Option(help="With --label-delay: each label comes up to this many events earlier or later.", min=0)] = 0,
    refine: Annotated[bool, typer.Option("--refine", help="With --label-delay: each event goes out with its coarsest label, and its full label follows as a label event (a refinement the daemon joins by id).")] = False,
) -> None:
    """Stream a dataset into a topic following an HLE schedule (the producer simulation), or your
    own events from a JSON-lines file (--jsonl)."""
    from connectors.kafka_io import wait_for_broker
    from connectors.settings import KafkaSettings
    from connectors.topics import ensure_topics
    from hle_stream.eval.producer_sim import produce as send_events
    from hle_stream.eval.producer_sim import simulated_event_count, simulated_events, with_delayed_labels

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {scenario}; choose from {', '.join(SCENARIOS)}")
    settings = KafkaSettings(bootstrap_servers)
    wait_for_broker(settings, BROKER_WAIT_S)
    if jsonl is not None:
        ensure_topics(settings, {topic: partitions})
        _produce_jsonl(settings, topic, jsonl, rate)
        return
    ds = load_dataset(None if data else dataset, data, data_root)
    ensure_topics(settings, {topic: partitions})
    stream = simulated_events(ds, scenario, seed, events, unlabelled_fraction)
    total = simulated_event_count(ds, scenario, seed, events)
    if refine and not label_delay:
        raise typer.BadParameter("--refine sends the full labels later: give --label-delay too")
    if label_delay:  # every label event is one more record; the count is the upper bound
        stream = with_delayed_labels(stream, label_delay, label_jitter, refine, seed)
        total *= 2
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"producing to {topic}", total=total)
        sent = send_events(settings, topic, stream, rate, lambda n: bar.update(task, completed=n))
    console.print(f"sent {sent} events to {topic} on {bootstrap_servers}")


def _produce_jsonl(settings, topic: str, source: str, rate: float | None) -> None:
    import sys

    from hle_stream.eval.producer_sim import jsonl_events
    from hle_stream.eval.producer_sim import produce as send_events
    from hle_stream.user_errors import UserError

    bad: list[int] = []

    def skipped(number: int, reason: str) -> None:
        bad.append(number)
        console.print(f"line {number} skipped: {reason}", markup=False, highlight=False)

    try:
        lines = sys.stdin if source == "-" else open(source, encoding="utf-8", errors="replace")
    except OSError as err:
        raise UserError(f"cannot read {source}: {err.strerror or err}") from None
    with lines:
        sent = send_events(settings, topic, jsonl_events(lines, skipped), rate)
    console.print(f"sent {sent} events to {topic} on {settings.bootstrap_servers}"
                  + (f"; {len(bad)} lines skipped" if bad else ""))


TAIL_TOPICS = {"predictions": "hle-predictions", "dead-letters": "hle-dead-letters", "events": "hle-events"}


@app.command()
def tail(
    what: Annotated[str, typer.Argument(help=f"What to read: {', '.join(TAIL_TOPICS)} (the daemon's default topics).")] = "predictions",
    topic: Annotated[Optional[str], typer.Option(help="Read this topic instead (e.g. your --predictions-topic).")] = None,
    bootstrap_servers: Annotated[str, typer.Option(help="Kafka bootstrap servers.", envvar="HLE_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document per line, as stored.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for new records (Ctrl-C stops).")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Stop after this many records.", min=1)] = None,
) -> None:
    """Print a topic's records from the beginning: predictions, dead letters or events."""
    from connectors.kafka_io import read_topic, wait_for_broker
    from connectors.settings import KafkaSettings
    from hle_stream.user_errors import UserError

    if topic is None and what not in TAIL_TOPICS:
        raise typer.BadParameter(f"unknown {what!r}; choose from {', '.join(TAIL_TOPICS)} or give --topic")
    name = topic or TAIL_TOPICS[what]
    settings = KafkaSettings(bootstrap_servers)
    wait_for_broker(settings, BROKER_WAIT_S)
    shown = 0
    try:
        for record in read_topic(settings, name, follow):
            typer.echo(_tail_line(record, what if topic is None else "", as_json))
            shown += 1
            if limit is not None and shown >= limit:
                break
    except KeyboardInterrupt:
        pass
    except ValueError as err:
        raise UserError(str(err)) from None
    console.print(f"{shown} records from {name}")


def _tail_line(record, what: str, as_json: bool) -> str:
    """A record as one line: raw JSON, or a readable summary of a prediction or a dead letter."""
    import json

    text = (record.value or b"").decode("utf-8", errors="replace")
    if as_json:
        return text
    try:
        document = json.loads(text)
    except ValueError:
        return f"{record.partition}@{record.offset}  {text[:200]}"
    if what == "predictions" and isinstance(document, dict):
        path = " > ".join(f"{step['label']} ({step['probability']:.2f})" for step in document.get("path", []))
        label = f"  [label {document['label']}]" if "label" in document else ""
        return f"{document.get('id')}  v{document.get('model_version')}  {path or '(no level sure enough)'}{label}"
    if what == "dead-letters" and isinstance(document, dict):
        return (f"{document.get('topic')}[{document.get('partition')}]@{document.get('offset')}  "
                f"{document.get('reason')}: {document.get('detail')}")
    return text


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of any error.", envvar="HLE_DEBUG")] = False) -> None:
    """Online continual learning on hierarchical label expansion."""
    global _debug
    _debug = debug


_debug = False


def main() -> None:
    """The ``hle-stream`` entry point: a mistake a user can fix is one line and an exit code."""
    try:
        app()
    except Exception as err:
        from hle_stream.user_errors import one_line

        known = one_line(err)
        if known is None or _debug:
            raise
        message, code = known
        typer.echo(f"error: {message}", err=True)  # one line, unwrapped
        raise SystemExit(code) from None
