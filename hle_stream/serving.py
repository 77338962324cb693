"""HTTP serving beside the daemon (Starlette on uvicorn): predictions from the live model, and
health and readiness probes.

- ``POST /predict``: one event or a list of events (the input contract; labels are ignored)
  → ``{"predictions": [{"id", "model_version", "path"}]}``; an invalid event → 400 with its
  reason.
- ``GET /healthz``: 200 while the consume loop keeps ticking (liveness).
- ``GET /readyz``: 200 once a model exists and the loop runs (readiness).
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
from starlette.responses import JSONResponse
from starlette.routing import Route

from hle_stream.events import EventError, event_from_document, prediction_path
from hle_stream.learner import HierarchicalLearner

# A loop that has not ticked for this long is stuck: a poll waits at most 0.5 s and a batch of
# 64 events trains in well under a second on a CPU, so 30 s leaves a wide margin.
LIVENESS_WINDOW_S = 30.0


class ServedModel(Protocol):
    lock: threading.Lock
    learner: HierarchicalLearner | None
    last_tick: float
    confidence_threshold: float


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
            probs = learner.predict_proba(x) if learner.net.heads else []
            version, tree = learner.steps, learner.tree
            paths = [prediction_path(tree, [p[i].numpy() for p in probs], model.confidence_threshold)
                     for i in range(len(events))]
        return JSONResponse({"predictions": [{"id": e.id, "model_version": version, "path": path}
                                             for e, path in zip(events, paths)]})

    async def healthz(request: Request) -> JSONResponse:
        age = time.monotonic() - model.last_tick
        return JSONResponse({"loop_tick_age_s": round(age, 3)}, status_code=200 if age < LIVENESS_WINDOW_S else 503)

    async def readyz(request: Request) -> JSONResponse:
        ready = model.learner is not None and time.monotonic() - model.last_tick < LIVENESS_WINDOW_S
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz),
                             Route("/readyz", readyz)])


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
