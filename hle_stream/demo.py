"""The embedded default: a local broker, the producer simulation and the daemon in one process,
with live progress, HTTP to look into, and a picture at the end."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from connectors.broker import LocalBroker, free_port
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.core.config import LearnerConfig
from hle_stream.core.methods import DEFAULT_METHOD
from hle_stream.eval.datasets import load_dataset
from hle_stream.eval.paths import REPO_ROOT
from hle_stream.eval.producer_sim import produce, simulated_event_count, simulated_events
from hle_stream.eval.progress_plot import plot_progress
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Progress
from hle_stream.service.kafka_daemon import KafkaDaemon


@dataclass(frozen=True)
class DemoSettings:
    dataset: str = "fashion-mnist"
    scenario: str = "multi-depth"
    method: str = DEFAULT_METHOD
    seed: int = 0
    events: int = 20000
    report_every_seconds: float = 2.0
    data_root: Path | None = None
    out: Path | None = None  # the run's folder; None: ./hle-demo-<start time>, made only when there is something to keep
    with_prometheus: bool = False
    learner_overrides: tuple[tuple[str, object], ...] = ()  # learner options by name, over the method's preset


def run_demo(settings: DemoSettings, say: Callable[[str], None]) -> None:
    """Stream the dataset through a local broker into the daemon until ``events`` are consumed or
    Ctrl-C / SIGTERM; ``say`` prints a line for the user."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # a stop mid-stream makes the clients complain
    # the broker, the producer and the daemon share this machine: torch's default of one thread per
    # core made them fight (about 15x slower on a busy 2-core machine); half the cores for torch
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    started = time.time()
    say(f"loading {settings.dataset} …")
    dataset = load_dataset(settings.dataset, data_root=settings.data_root)
    total = simulated_event_count(dataset, settings.scenario, settings.seed, settings.events)
    stop_producing = threading.Event()
    history: list[tuple[int, dict[int, float], tuple[int, ...]]] = []
    with LocalBroker() as running, tempfile.TemporaryDirectory() as checkpoints:
        # Tansu holds a group join for half the session timeout: keep it short on the local broker.
        kafka = KafkaSettings(running.bootstrap_servers, session_timeout_ms=2000, heartbeat_interval_ms=500)
        port = free_port()
        # the whole dataset lands in the topic at once (a backlog, not a live stream): learn from
        # every event, as a backfill of history would, rather than skip training to catch up
        config = DaemonConfig(checkpoint_dir=Path(checkpoints), max_events=total, http_port=port,
                              report_every_seconds=settings.report_every_seconds, train_budget="unlimited",
                              processing=ProcessingConfig(method=settings.method, learner_config=LearnerConfig(
                                  memory_size=500, batch_size=16), learner_overrides=settings.learner_overrides))
        ensure_topics(kafka, {config.input_topic: 1, config.predictions_topic: 1, config.dead_letter_topic: 1})
        say(f"broker on {running.bootstrap_servers}; streaming {total} {settings.dataset} events "
            f"({settings.scenario}) into {config.input_topic}; the daemon learns with {settings.method}")
        say(f"watch it learn: open http://127.0.0.1:{port}/ in a browser (also /metrics, /classes, /readyz)")
        prometheus = _start_prometheus(port, Path(checkpoints), say) if settings.with_prometheus else None
        events = _until(stop_producing, simulated_events(dataset, settings.scenario, settings.seed, settings.events))
        producer = threading.Thread(target=produce, daemon=True, args=(kafka, config.input_topic, events))

        def show(progress: Progress) -> None:
            history.append((progress.consumed, progress.accuracy, progress.classes))
            say(progress.line())

        daemon = KafkaDaemon(kafka, config, report=show)

        def stop(*_: object) -> None:
            stop_producing.set()
            daemon.request_stop()

        previous = signal.signal(signal.SIGINT, stop), signal.signal(signal.SIGTERM, stop)
        try:
            producer.start()
            daemon.run()
        finally:
            if prometheus is not None:
                prometheus.terminate()
                prometheus.wait(10)
            stop_producing.set()
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
            producer.join(timeout=5)
    if len(history) >= 2:  # a run folder of its own: a later (or interrupted) run never overwrites this one
        out = settings.out or Path(f"hle-demo-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}")
        out.mkdir(parents=True, exist_ok=True)
        path = plot_progress(history, out / "accuracy.png", f"{settings.dataset} · {settings.scenario} · {settings.method}")
        say(f"accuracy over the stream, per level: {path.resolve()}")
    say("demo finished: broker stopped, checkpoints removed")


def _start_prometheus(daemon_port: int, workdir: Path, say: Callable[[str], None]) -> subprocess.Popen | None:
    """Prometheus with the shipped config and rules (``ops/``), scraping the demo's daemon every 2 s;
    ``None`` (and a line saying why) when it is not installed or ``ops/`` is not beside the code."""
    binary = shutil.which("prometheus")
    ops = REPO_ROOT / "ops"
    if binary is None or not (ops / "prometheus.yml").exists():
        say("--with-prometheus: " + ("prometheus is not installed (e.g. apt-get install prometheus)" if binary is None
                                     else f"the shipped config is not in {ops}") + "; going on without it")
        return None
    config = (ops / "prometheus.yml").read_text()
    for old, new in (('targets: ["daemon:8080"]', f'targets: ["127.0.0.1:{daemon_port}"]'),
                     ("scrape_interval: 15s", "scrape_interval: 2s"),
                     ("evaluation_interval: 15s", "evaluation_interval: 2s")):
        config = config.replace(old, new)
    shutil.copytree(ops / "rules", workdir / "rules")
    (workdir / "prometheus.yml").write_text(config)
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={workdir / 'prometheus.yml'}",
                                f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=open(workdir / "prometheus.log", "wb"),
                               start_new_session=True)  # stopped by the demo, not by the terminal's Ctrl-C
    say(f"Prometheus (shipped config and rules, scraping every 2 s): http://127.0.0.1:{port}/graph?g0.expr="
        "hle_prequential_accuracy_ratio")
    return process


def _until(stop: threading.Event, events: Iterator[dict]) -> Iterator[dict]:
    for event in events:
        if stop.is_set():
            return
        yield event
