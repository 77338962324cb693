"""HTTP serving beside the daemon (Starlette on uvicorn): predictions from the live model, and
health and readiness probes.

- ``POST /predict``: one event or a list of events (the input contract; labels are ignored)
  → ``{"predictions": [{"id", "model_version", "path"}]}``; an invalid event → 400 with its
  reason.
- ``GET /healthz``: 200 while the consume loop keeps ticking (liveness).
- ``GET /readyz``: 200 once a model exists, the loop runs and Kafka takes the daemon's output
  (readiness; 503 while the broker is away).
- ``GET /metrics``: the Prometheus series (when metrics are on).
- ``GET /classes``: per-class detail, which Prometheus must not hold (one series per class would
  grow without bound): prequential accuracy and replay-memory samples of every known class.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Protocol

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hle_stream.evaluation import PrequentialAccuracy
from hle_stream.events import EventError, event_from_document, prediction_path
from hle_stream.learner import HierarchicalLearner
from hle_stream.telemetry import Telemetry

# A loop that has not ticked for this long is stuck: a poll waits at most 0.5 s and a batch of
# 64 events trains in well under a second on a CPU, so 30 s leaves a wide margin.
LIVENESS_WINDOW_S = 30.0


class ServedModel(Protocol):
    lock: threading.Lock
    learner: HierarchicalLearner | None
    last_tick: float
    kafka_ok: bool
    confidence_threshold: float
    prequential: PrequentialAccuracy
    telemetry: Telemetry | None


def build_app(model: ServedModel) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        learner = model.learner
        if learner is None:
            return JSONResponse({"error": "no model yet: the daemon has not seen an event"}, status_code=503)
        body = await request.body()
        try:
            documents = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return JSONResponse({"error": "not_json", "detail": str(err)}, status_code=400)
        documents = documents if isinstance(documents, list) else [documents]
        try:
            events = [event_from_document(d, learner.input_shape) for d in documents]
        except EventError as err:
            return JSONResponse({"error": err.reason, "detail": str(err)}, status_code=400)
        if not events:
            return JSONResponse({"predictions": []})
        x = torch.from_numpy(np.stack([e.x for e in events]))
        with model.lock:
            started = time.perf_counter()
            probs = learner.predict_proba(x) if learner.net.heads else []
            if model.telemetry is not None:
                model.telemetry.record_prediction("http", len(events), time.perf_counter() - started)
            version, tree = learner.steps, learner.tree
            paths = [prediction_path(tree, [p[i].numpy() for p in probs], model.confidence_threshold)
                     for i in range(len(events))]
        return JSONResponse({"predictions": [{"id": e.id, "model_version": version, "path": path}
                                             for e, path in zip(events, paths)]})

    async def healthz(request: Request) -> JSONResponse:
        age = time.monotonic() - model.last_tick
        return JSONResponse({"loop_tick_age_s": round(age, 3)}, status_code=200 if age < LIVENESS_WINDOW_S else 503)

    async def readyz(request: Request) -> JSONResponse:
        checks = {"model": model.learner is not None, "loop": time.monotonic() - model.last_tick < LIVENESS_WINDOW_S,
                  "kafka": model.kafka_ok}
        ready = all(checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    # Plain (sync) endpoints run in Starlette's thread pool: waiting for the loop's lock there
    # does not stall /healthz.
    def metrics(request: Request) -> Response:
        return Response(generate_latest(model.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    def classes(request: Request) -> JSONResponse:
        with model.lock:
            return JSONResponse({"levels": class_report(model.learner, model.prequential)})

    routes = [Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/classes", classes)]
    if model.telemetry is not None:
        routes.append(Route("/metrics", metrics))
    return Starlette(routes=routes)


def class_report(learner: HierarchicalLearner | None, prequential: PrequentialAccuracy) -> list[dict]:
    """Per level, every known class: prequential accuracy (null before it was scored), labelled
    events seen, and replay-memory samples whose own label is that class."""
    if learner is None:
        return []
    tree, memory = learner.tree, learner.memory
    in_memory = torch.bincount(memory.bin[: memory.size], minlength=tree.total_classes).tolist()
    report = []
    for level in range(1, tree.depth + 1):
        rows = []
        for index, path in enumerate(tree.classes(level)):
            correct, seen = prequential.class_accuracy(level, index)
            rows.append({"path": path, "prequential_accuracy": correct / seen if seen else None, "seen": seen,
                         "memory_samples": in_memory[tree.global_id_of(level, index)]})
        report.append({"level": level, "classes": rows})
    return report


class HttpServer:
    """uvicorn in a background thread, stoppable."""

    def __init__(self, model: ServedModel, host: str, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(build_app(model), host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
