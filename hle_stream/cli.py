"""The ``hle-stream`` command line."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Annotated, Any, Optional

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
from hle_stream.service.config import LEARNER_HELP, CommandSetting
from hle_stream.service.settings import SERVE_SETTINGS, SETTINGS
from hle_stream.text.encoder import DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT, SHIPPED_ENCODER, EncoderChoice

# rich_markup_mode=None: plain help that never cuts an option's or a variable's name at 80 columns
app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Online continual learning on hierarchical label expansion.")
console = Console(stderr=True)
BROKER_WAIT_S = 5.0  # produce and tail: how long a broker may take to answer before exit code 4
PIPED_PROGRESS_S = 10.0  # a bench progress line this often when no terminal shows the bars


def _split_list(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"give at least one {what}")
    if allowed is not None:
        unknown = [v for v in items if v not in allowed]
        if unknown:
            raise typer.BadParameter(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items




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
    encoder: Annotated[str, typer.Option(help=ENCODER_HELP)] = SHIPPED_ENCODER,
    encoder_max_tokens: Annotated[int, typer.Option(help=MAX_TOKENS_HELP, min=1, max=MAX_TOKENS_LIMIT)] = DEFAULT_MAX_TOKENS,
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
    choice = EncoderChoice(encoder, encoder_max_tokens)
    source = DataSource(dataset, data, data_root, choice)
    _say_if_embedding(dataset, data, choice)
    specs = [RunSpec(sc, m, s, label_delay, *learner_runs[m]) for sc in scenarios for m in method_names
             for s in seed_values]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {spec: bar.add_task(f"{spec.scenario} {spec.method} seed {spec.seed}", total=None) for spec in specs}
        started: dict = {}  # spec -> (monotonic start, time of its last line)

        def show(spec: "RunSpec", position: int, total: int) -> None:
            bar.update(tasks[spec], completed=position, total=total)
            now = time.monotonic()
            first, last = started.setdefault(spec, (now, now))
            name = f"{spec.scenario} {spec.method} seed {spec.seed}"
            if position >= total:  # also visible where the bar is not (a log file, CI)
                console.print(f"finished {name} in {now - first:.0f} s")
            elif not console.is_terminal and now - last >= PIPED_PROGRESS_S and position:
                rate = position / max(now - first, 1e-9)
                console.print(f"{name}: {position}/{total} samples ({100 * position / total:.0f} %), {rate:.0f}/s, "
                              f"about {(total - position) / rate:.0f} s left")
                started[spec] = (first, now)

        runs = run_all(source, settings, specs, jobs, show)
    for sc in scenarios:
        config = {"dataset": dataset or str(data), "encoder": choice.identity, "scenario": sc, "methods": method_names, "seeds": seed_values,
                  "label_delay": label_delay, "preset": preset, "preset_settings": asdict(settings)}
        target = out / sc if len(scenarios) > 1 else out
        paths = write_report(build_report([r for r in runs if r["scenario"] == sc], config), target)
        typer.echo(paths[1].read_text())
        console.print(f"wrote {', '.join(str(p) for p in paths)}")


ENCODER_HELP = ("A text dataset's encoder: minilm (all-MiniLM-L6-v2, shipped in the [text] extra) or a local "
                "sentence-transformers model folder.")
MAX_TOKENS_HELP = "Word pieces of each text the encoder reads."


def _say_if_embedding(dataset: Optional[str], data: Optional[Path], choice: EncoderChoice) -> None:
    """A text dataset embedded for the first time takes minutes: say so before the wait."""
    from hle_stream.eval.datasets import text_dataset_cache

    cache = text_dataset_cache(dataset, data, choice)
    if cache is not None and not cache.exists():
        console.print(f"embedding the texts with {choice.identity['encoder']} at {choice.max_tokens} word pieces "
                      f"(once: about 20 minutes for 20 Newsgroups at 256 on 2 cores; cached in {cache})")


@app.command("export-npz")
def export_npz(
    dataset: Annotated[str, typer.Option(help=f"Built-in dataset: {', '.join(DATASETS)}.")],
    out: Annotated[Path, typer.Option(help="The .npz file to write.")],
    data_root: Annotated[Optional[Path], typer.Option(help="Folder of the built-in datasets.", envvar="HLE_DATA_ROOT")] = None,
    embed: Annotated[bool, typer.Option("--embed", help="A text dataset: write the encoder's vectors (x) instead of the texts (text).")] = False,
    encoder: Annotated[str, typer.Option(help=ENCODER_HELP)] = SHIPPED_ENCODER,
    encoder_max_tokens: Annotated[int, typer.Option(help=MAX_TOKENS_HELP, min=1, max=MAX_TOKENS_LIMIT)] = DEFAULT_MAX_TOKENS,
) -> None:
    """Write a built-in dataset in the user .npz format (x or text, label, split): a template for your own."""
    choice = EncoderChoice(encoder, encoder_max_tokens) if embed else None
    if choice is not None:
        _say_if_embedding(dataset, None, choice)
    ds = load_dataset(dataset, data_root=data_root, encoder=choice)
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


def run(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of settings (option = value, e.g. memory-size = 500); the command line and HLE_* variables override it.", envvar="HLE_CONFIG", is_eager=True, callback=_read_config_file, dir_okay=False)] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved settings, each with where it came from, as a config file, and exit.")] = False,
    **values: Any,
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
    from hle_stream.service.lineage import LineageMismatchError
    from hle_stream.service.serving import HttpStartError, require_auth_off_loopback
    from hle_stream.service.settings import SettingsError, build, render
    from hle_stream.service.store_owner import StoreOwnedError

    file_table, by_name = ctx.meta.get(LEARNER_TABLE, {}), _learner_option_pairs(values["learner"])
    values["learner"] = {**file_table, **by_name}
    try:
        settings, daemon_config = build(values)
    except SettingsError as err:
        raise typer.BadParameter(str(err)) from None
    if print_config:
        names = {"COMMANDLINE": "command line", "ENVIRONMENT": "environment", "DEFAULT_MAP": f"config file {config}"}
        sources = {o: names.get(getattr(ctx.get_parameter_source(o), "name", ""), "default") for o in SETTINGS}
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
            UnreadableCheckpointError, HttpStartError, LineageMismatchError, StoreOwnedError) as err:  # refused
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    except FinalCheckpointFailed as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_NO_FINAL_CHECKPOINT) from None


def _with_settings_as_options(command, settings: dict[str, CommandSetting]):
    """A command's options, one per setting (declared once, as fields of the settings dataclasses:
    ``hle_stream.service.settings``), after the command's own (``run``'s ``--config``)."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for setting in settings.values():
        names = [f"--{setting.name.replace('_', '-')}"] if setting.flag else []
        info = typer.Option(*names, help=setting.help or None, envvar=setting.env, min=setting.min, max=setting.max)
        own.append(inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, default=setting.default,
                                     annotation=Annotated[setting.type, info]))
    command.__signature__ = inspect.Signature(own)
    return command


app.command()(_with_settings_as_options(run, SETTINGS))


def serve(
    model_store: Annotated[str, typer.Option(help="The trainer's --model-store: a directory or s3://bucket/prefix.", envvar="HLE_MODEL_STORE")],
    **values: Any,
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
    from hle_stream.service.kafka_daemon import replica_connector
    from hle_stream.service.replica import PredictorReplica
    from hle_stream.service.serving import HttpStartError, require_auth_off_loopback
    from hle_stream.service.settings import build_replica

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings, config = build_replica(values)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
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


app.command()(_with_settings_as_options(serve, SERVE_SETTINGS))


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Stream this many training samples, then stop.", min=1)] = 20000,
    dataset: Annotated[str, typer.Option(help=f"Built-in dataset: {', '.join(DATASETS)}.")] = "fashion-mnist",
    scenario: Annotated[str, typer.Option(help=f"HLE scenario: {', '.join(SCENARIOS)}.")] = "multi-depth",
    method: Annotated[str, typer.Option(help=f"Learner: {', '.join(METHODS)}.")] = DEFAULT_METHOD,
    learner: Annotated[Optional[list[str]], typer.Option(help=LEARNER_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the stream.")] = 0,
    report_every_seconds: Annotated[float, typer.Option(help="Print a progress line this often.", min=0.1)] = 2.0,
    out: Annotated[Optional[Path], typer.Option(help="The run's folder, for its accuracy-over-time picture (default: "
                                                     "a new ./hle-demo-<start time>, made only at the end).")] = None,
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
    run_demo(DemoSettings(dataset, scenario, method, seed, events, report_every_seconds, data_root, out,
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


model_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="A model store's versions: list them, show one, roll back to one.")
app.add_typer(model_app, name="model")
ModelStore = Annotated[str, typer.Option(help="The model store (a directory, or s3://bucket/prefix), or a "
                                              "--checkpoint-dir.", envvar="HLE_MODEL_STORE")]


def _model_store(url: str):
    from connectors.blob_store import open_blob_store
    from hle_stream.user_errors import UserError

    if "://" not in url and not Path(url).is_dir():
        raise UserError(f"{url} is not a directory (nor an s3:// store)")
    return open_blob_store(url)


@model_app.command("list")
def model_list(model_store: ModelStore,
               as_json: Annotated[bool, typer.Option("--json", help="One JSON document per version.")] = False) -> None:
    """The versions in the store (its newest checkpoints), oldest first, and the rollbacks made."""
    import dataclasses
    import json

    from hle_stream.service.model_history import history, versions

    blobs = _model_store(model_store)
    found = versions(blobs)
    for version in found:
        typer.echo(json.dumps(dataclasses.asdict(version)) if as_json else version.line())
    for record in history(blobs):
        console.print(f"rolled back to version {record['to_version']} as version {record['new_version']} "
                      f"({record['checkpoint']}, replacing version {record['replaced_version']})")
    console.print(f"{len(found)} versions in {blobs.url}")


@model_app.command("show")
def model_show(version: Annotated[int, typer.Argument(help="A model_version from 'hle-stream model list'.")],
               model_store: ModelStore) -> None:
    """One version in full, as JSON: who wrote it and when, what it learned, its offsets."""
    import dataclasses
    import json

    from hle_stream.service.model_history import versions
    from hle_stream.user_errors import UserError

    blobs = _model_store(model_store)
    matching = [v for v in versions(blobs) if v.version == version]
    if not matching:
        raise UserError(f"no version {version} in {blobs.url}; 'hle-stream model list' shows the versions there")
    typer.echo(json.dumps(dataclasses.asdict(matching[-1]), indent=1))


@model_app.command("rollback")
def model_rollback(to: Annotated[int, typer.Option("--to", help="The model_version to go back to.")],
                   model_store: ModelStore) -> None:
    """Make an earlier version the newest, as a new version above every one published: replicas
    serve it at their next refresh, a running trainer continues from it (the events after it are
    learned again), and the store's history records it."""
    from hle_stream.service.checkpoint import CheckpointNumberTaken
    from hle_stream.service.model_history import RollbackError, rollback
    from hle_stream.user_errors import UserError

    blobs = _model_store(model_store)
    for _ in range(5):  # a trainer wrote the same checkpoint number first: the next one
        try:
            rolled = rollback(blobs, to)
            break
        except RollbackError as err:
            raise UserError(str(err)) from None
        except CheckpointNumberTaken:
            continue
    else:
        raise UserError(f"{blobs.url}: a trainer kept writing checkpoints while this rollback tried; try again")
    console.print(f"rolled back to version {to}: now version {rolled.version} ({rolled.checkpoint})")


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
    ds = load_dataset(None if data else dataset, data, data_root, encoder=None)  # texts go out as text events
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


TAIL_NEWEST = 10  # what tail prints unless told otherwise, as tail(1) does
TAIL_TOPICS = {"predictions": "hle-predictions", "dead-letters": "hle-dead-letters", "events": "hle-events"}


@app.command()
def tail(
    what: Annotated[str, typer.Argument(help=f"What to read: {', '.join(TAIL_TOPICS)} (the daemon's default topics).")] = "predictions",
    topic: Annotated[Optional[str], typer.Option(help="Read this topic instead (e.g. your --predictions-topic).")] = None,
    bootstrap_servers: Annotated[str, typer.Option(help="Kafka bootstrap servers.", envvar="HLE_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document per line, as stored.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Then keep waiting for new records (Ctrl-C stops).")] = False,
    limit: Annotated[Optional[int], typer.Option(help=f"How many records: the newest {TAIL_NEWEST} by default; with "
                                                      "--from-beginning, the first N (default: all).", min=1)] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Print from the first record.")] = False,
) -> None:
    """Print a topic's newest records (predictions, dead letters or events), or all from the first."""
    import collections

    from connectors.kafka_io import read_topic, wait_for_broker
    from connectors.settings import KafkaSettings
    from hle_stream.user_errors import UserError

    if topic is None and what not in TAIL_TOPICS:
        raise typer.BadParameter(f"unknown {what!r}; choose from {', '.join(TAIL_TOPICS)} or give --topic")
    name = topic or TAIL_TOPICS[what]
    settings = KafkaSettings(bootstrap_servers)
    wait_for_broker(settings, BROKER_WAIT_S)
    newest: collections.deque = collections.deque(maxlen=limit or TAIL_NEWEST)
    caught_up, shown = from_beginning, 0

    def show(record) -> None:
        nonlocal shown
        typer.echo(_tail_line(record, what if topic is None else "", as_json))
        shown += 1

    try:
        for record in read_topic(settings, name, follow, mark_caught_up=not from_beginning):
            if record is None:  # following, and the backlog is read: its newest, then what comes
                caught_up = True
                while newest:
                    show(newest.popleft())
            elif not caught_up:
                newest.append(record)
            else:
                show(record)
                if from_beginning and limit is not None and shown >= limit:
                    break
        while newest:
            show(newest.popleft())
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
