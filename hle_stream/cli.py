"""The ``hle-stream`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hle_stream.bench.orchestrate import DataSource, run_all
from hle_stream.bench.presets import PRESETS
from hle_stream.bench.report import build_report, write_report
from hle_stream.bench.runner import RunSpec
from hle_stream.config import METHODS
from hle_stream.datasets import DATASETS, load_dataset, save_npz
from hle_stream.streams import SCENARIOS

app = typer.Typer(no_args_is_help=True, help="Online continual learning on hierarchical label expansion.")
console = Console(stderr=True)


def _split_list(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"give at least one {what}")
    if allowed is not None:
        unknown = [v for v in items if v not in allowed]
        if unknown:
            raise typer.BadParameter(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items


@app.command()
def bench(
    dataset: Annotated[Optional[str], typer.Option(help=f"Built-in dataset: {', '.join(DATASETS)}.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Your own dataset as .npz (x, label[, split]); see README.", exists=True, dir_okay=False)] = None,
    scenario: Annotated[str, typer.Option(help=f"Comma-separated HLE scenarios: {', '.join(SCENARIOS)}.")] = "multi-depth",
    methods: Annotated[str, typer.Option(help=f"Comma-separated methods: {', '.join(METHODS)}.")] = "er,pl-fms",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    preset: Annotated[str, typer.Option(help=f"Size and settings: {', '.join(PRESETS)}.")] = "quick",
    out: Annotated[Path, typer.Option(help="Output folder (report.json, report.md, accuracy.png).")] = Path("bench-out"),
    jobs: Annotated[int, typer.Option(help="Runs in parallel (each gets cores/jobs threads).", min=1)] = 1,
    data_root: Annotated[Optional[Path], typer.Option(help="Folder of the built-in datasets.", envvar="HLE_DATA_ROOT")] = None,
) -> None:
    """Run scenarios × methods × seeds on an HLE stream and write a report per scenario."""
    if (dataset is None) == (data is None):
        raise typer.BadParameter("give exactly one of --dataset or --data")
    if dataset is not None and dataset not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {dataset}; choose from {', '.join(DATASETS)}")
    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset}; choose from {', '.join(PRESETS)}")
    scenarios = _split_list(scenario, SCENARIOS, "scenario")
    method_names = _split_list(methods, tuple(METHODS), "method")
    try:
        seed_values = [int(s) for s in _split_list(seeds, None, "seed")]
    except ValueError:
        raise typer.BadParameter("seeds must be integers, e.g. 0,1,2") from None
    source = DataSource(dataset, data, data_root)
    specs = [RunSpec(sc, m, s) for sc in scenarios for m in method_names for s in seed_values]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {spec: bar.add_task(f"{spec.scenario} {spec.method} seed {spec.seed}", total=None) for spec in specs}

        def show(spec: RunSpec, position: int, total: int) -> None:
            bar.update(tasks[spec], completed=position, total=total)
            if position >= total:  # also visible where the bar is not (a log file, CI)
                console.print(f"finished {spec.scenario} {spec.method} seed {spec.seed}")

        runs = run_all(source, preset, specs, jobs, show)
    for sc in scenarios:
        config = {"dataset": dataset or str(data), "scenario": sc, "methods": method_names, "seeds": seed_values,
                  "preset": preset, "preset_settings": vars(PRESETS[preset]) | {"learner": vars(PRESETS[preset].learner)}}
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
) -> None:
    """Stream a dataset into a topic following an HLE schedule (the producer simulation)."""
    from connectors.producer_sim import produce as send_events
    from connectors.producer_sim import simulated_events
    from connectors.settings import KafkaSettings
    from connectors.topics import ensure_topics

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {scenario}; choose from {', '.join(SCENARIOS)}")
    ds = load_dataset(None if data else dataset, data, data_root)
    settings = KafkaSettings(bootstrap_servers)
    ensure_topics(settings, {topic: partitions})
    stream = simulated_events(ds, scenario, seed, events, unlabelled_fraction)
    total = min(events or len(ds.x_train), len(ds.x_train)) * (2 if scenario == "dual-label" else 1)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"producing to {topic}", total=total)
        sent = send_events(settings, topic, stream, rate, lambda n: bar.update(task, completed=n))
    console.print(f"sent {sent} events to {topic} on {bootstrap_servers}")


def main() -> None:
    app()
