"""HTTP serving beside the daemon (Starlette on uvicorn): predictions from a snapshot of the
model, health and readiness probes, metrics and per-class detail, built to survive abuse.

- ``POST /predict``: one event or a list of events (the input contract; labels are ignored)
  → ``{"predictions": [{"id", "model_version", "path"}]}``; an invalid event → 400 with its
  reason.
- ``GET /healthz``: 200 while the consume loop keeps ticking (liveness).
- ``GET /readyz``: 200 once a model exists, its weights are finite, the loop runs, the last
  checkpoint write succeeded and Kafka takes the daemon's output (readiness; 503 while the
  broker is away or the disk refuses checkpoints).
- ``GET /metrics``: the Prometheus series (when metrics are on).
- ``GET /classes?level=&offset=&limit=``: per-class detail, a page of at most ``MAX_CLASS_PAGE``
  classes per level (prequential accuracy and replay-memory samples), which Prometheus must not
  hold (one series per class would grow without bound).

Limits (``HttpLimits``, each a ``hle-stream run`` option): a body over ``max_body_bytes`` is 413
(refused from its Content-Length before it is read), more than ``max_events`` events 413, a
body not received within ``request_timeout_s`` 408; more than ``max_concurrent`` predictions in
flight, or once predictions have used ``predict_share`` of a core over the last few seconds, 503
with ``Retry-After`` after a 2 s wait (``BUSY_ANSWER_DELAY_S``); a refused request's connection
is closed, its body unread; a connection that sends no complete request head within
``request_timeout_s`` is closed, and connections beyond ``max_connections`` are closed at once.
Predictions run in worker threads on a ``Predictor``, never on the event loop and never
under the training lock, so ``/healthz`` and ``/readyz`` answer while the model trains or
predicts. With ``token`` set, ``/predict``, ``/classes`` and ``/metrics`` need
``Authorization: Bearer <token>``; the probes stay open.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Protocol

import anyio
import numpy as np
import torch
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from hle_stream.contract import (
    Event,
    EventError,
    event_from_document,
    prediction_document,
    require_dtype,
    require_shape,
)
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.predictor import Predictor
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.service.config import HttpLimits
from hle_stream.service.live_view import LiveView
from hle_stream.service.telemetry import NoTelemetry, Telemetry

# A loop that has not ticked for this long is stuck: a poll waits at most 0.5 s and a batch of
# 64 events trains in well under a second on a CPU, so 30 s leaves a wide margin.
LIVENESS_WINDOW_S = 30.0
MAX_CLASS_PAGE = 1000
LIVE_PAGE = Path(__file__).with_name("static") / "live.html"  # plain HTML and JS, no build step
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


BUSY_WINDOW_S = 5.0
BUSY_ANSWER_DELAY_S = 2.0
"""A busy ``/predict`` is answered (503, Retry-After: 1) only after this long: a client that ignores
Retry-After and retries at once would otherwise turn refusals into a flood that costs the
event loop, and so the trainer, more than the predictions it is refused (the loop shares the
GIL with training; ``benchmarks/http_load.py`` measures the learning rate kept under a flood for
each wait). The wait costs the server one timer, and the unread body stays in the socket."""


class BusyShare:
    """The share of wall time the prediction workers were busy over the last ``window_s``: the
    daemon's first job is to learn, so ``/predict`` is admitted only while it stays under a
    budget (``--http-predict-share``); a flood then costs the trainer a bounded slice of CPU (and
    of the GIL, which JSON parsing holds).

    >>> share = BusyShare(window_s=10.0)
    >>> share.add(0.0, 2.0); share.add(5.0, 6.0)
    >>> share.share(now=10.0)
    0.3
    >>> share.share(now=15.0)  # the first span has left the window
    0.1
    >>> round(share.projected(now=15.0, queued=2), 3)  # and two more requests, each as long as the last
    0.3
    """

    def __init__(self, window_s: float = BUSY_WINDOW_S) -> None:
        self.window_s = window_s
        self._spans: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()
        self._last = 0.0

    def add(self, started: float, finished: float) -> None:
        with self._lock:
            self._spans.append((started, finished))
            self._last = finished - started

    def share(self, now: float) -> float:
        horizon = now - self.window_s
        with self._lock:
            while self._spans and self._spans[0][1] < horizon:
                self._spans.popleft()
            busy = sum(min(end, now) - max(start, horizon) for start, end in self._spans)
        return busy / self.window_s

    def projected(self, now: float, queued: int) -> float:
        """The share once ``queued`` admitted requests have run too (each as long as the last):
        without them, a burst admitted at once would overshoot the budget several times over."""
        return self.share(now) + queued * self._last / self.window_s


class ServedModel(Protocol):
    lock: threading.Lock  # held by the loop while it processes a micro-batch
    snapshot: Predictor | None
    last_tick: float
    kafka_ok: bool
    model_finite: bool
    checkpoint_ok: bool  # the last checkpoint write succeeded
    writer_ok: bool  # not fenced: the model store still names this trainer (a replica: always)
    live: LiveView | None  # what the page at / shows (a replica: none)
    confidence_threshold: float
    max_abs_feature: float
    telemetry: Telemetry | NoTelemetry

    @property
    def learner(self) -> HierarchicalLearner | None: ...

    @property
    def prequential(self) -> PrequentialAccuracy: ...

    @property
    def model_version(self) -> int: ...

    def with_text_features(self, events: list[Event]) -> list[Event]:
        """The events with their texts encoded as the model's were; raises ``EventError``."""


class _Refused(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error = status, error


def build_app(model: ServedModel, limits: HttpLimits = HttpLimits()) -> Starlette:
    predict_threads = anyio.CapacityLimiter(limits.predict_threads)
    busy = BusyShare()
    inflight = 0  # touched only on the event loop

    def refused(status: int, error: str, detail: str, **headers: str) -> JSONResponse:
        """An error answer that also closes the connection: a refused body is not read, and
        reading it to keep the connection alive would cost what the refusal saves."""
        return JSONResponse({"error": error, "detail": detail}, status_code=status,
                            headers={"Connection": "close", **headers})

    def authorized(request: Request) -> bool:
        if limits.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {limits.token}".encode())

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise _Refused(413, "too_large", f"a body of {declared} bytes; at most {limits.max_body_bytes}")
        body = bytearray()
        try:
            async with asyncio.timeout(limits.request_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limits.max_body_bytes:
                        raise _Refused(413, "too_large", f"a body over {limits.max_body_bytes} bytes")
        except TimeoutError:
            raise _Refused(408, "timeout", f"the body did not arrive within {limits.request_timeout_s} s") from None
        return bytes(body)

    def predict_body(body: bytes, snapshot: Predictor) -> dict:
        """Parse, validate and predict, in a worker thread (JSON of a 1 MiB body is CPU work)."""
        started = time.monotonic()
        try:
            return predict_events(body, snapshot)
        finally:
            busy.add(started, time.monotonic())

    def predict_events(body: bytes, snapshot: Predictor) -> dict:
        try:
            documents = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise _Refused(400, "not_json", str(err)[:200]) from None
        documents = documents if isinstance(documents, list) else [documents]
        if len(documents) > limits.max_events:
            raise _Refused(413, "too_many_events", f"{len(documents)} events; at most {limits.max_events}")
        try:
            events = model.with_text_features([event_from_document(d, snapshot.input_spec.shape,
                                                                   max_abs_feature=model.max_abs_feature)
                                               for d in documents])
            for event in events:
                require_shape(event, snapshot.input_spec.shape)
                require_dtype(event, snapshot.input_spec.dtype)
        except EventError as err:
            raise _Refused(400, err.reason, str(err)[:500]) from None
        if not events:
            return {"predictions": []}
        started = time.perf_counter()
        paths = snapshot.predict_paths(torch.from_numpy(np.stack([e.x for e in events])), model.confidence_threshold)
        model.telemetry.record_prediction("http", len(events), time.perf_counter() - started)
        return {"predictions": [prediction_document(e.id, snapshot.version, path) for e, path in zip(events, paths)]}

    async def predict(request: Request) -> JSONResponse:
        nonlocal inflight
        if not authorized(request):
            return refused(401, "unauthorized", "send Authorization: Bearer <token>")
        snapshot = model.snapshot
        if snapshot is None:
            return refused(503, "no_model", "no model yet: the daemon has not seen an event", **{"Retry-After": "5"})
        if inflight >= limits.max_concurrent:
            await asyncio.sleep(BUSY_ANSWER_DELAY_S)
            return refused(503, "busy", f"{limits.max_concurrent} predictions in flight", **{"Retry-After": "1"})
        if busy.projected(time.monotonic(), inflight) >= limits.predict_share:
            await asyncio.sleep(BUSY_ANSWER_DELAY_S)
            return refused(503, "busy", f"predictions used their share ({limits.predict_share:.0%} of a core) of the "
                                        f"last {BUSY_WINDOW_S:.0f} s; the daemon's CPU goes to learning first",
                           **{"Retry-After": "1"})
        inflight += 1
        try:
            body = await read_body(request)
            answer = await anyio.to_thread.run_sync(predict_body, body, snapshot, limiter=predict_threads)
            return JSONResponse(answer)
        except _Refused as err:
            return refused(err.status, err.error, str(err))
        finally:
            inflight -= 1

    async def healthz(request: Request) -> JSONResponse:
        age = time.monotonic() - model.last_tick
        return JSONResponse({"loop_tick_age_s": round(age, 3)}, status_code=200 if age < LIVENESS_WINDOW_S else 503)

    async def readyz(request: Request) -> JSONResponse:
        checks = {"model": model.snapshot is not None or model.learner is not None,
                  "loop": time.monotonic() - model.last_tick < LIVENESS_WINDOW_S,
                  "kafka": model.kafka_ok, "finite": model.model_finite, "checkpoint": model.checkpoint_ok,
                  "not_fenced": model.writer_ok}
        ready = all(checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    # Plain (sync) endpoints run in Starlette's thread pool, off the event loop.
    def metrics(request: Request) -> Response:
        if not authorized(request):
            return refused(401, "unauthorized", "send Authorization: Bearer <token>")
        return Response(generate_latest(model.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    def classes(request: Request) -> JSONResponse:
        if not authorized(request):
            return refused(401, "unauthorized", "send Authorization: Bearer <token>")
        try:
            level = int(request.query_params.get("level", 0))
            offset = max(0, int(request.query_params.get("offset", 0)))
            limit = min(MAX_CLASS_PAGE, max(1, int(request.query_params.get("limit", MAX_CLASS_PAGE))))
        except ValueError:
            return refused(400, "bad_query", "level, offset and limit are integers")
        with model.lock:
            return JSONResponse({"levels": class_report(model.learner, model.prequential, level, offset, limit)})

    def live_page(request: Request) -> Response:
        """The page itself holds no data (it reads /live.json, with the token when one is set)."""
        return Response(LIVE_PAGE.read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    def live_json(request: Request) -> JSONResponse:
        if not authorized(request):
            return refused(401, "unauthorized", "send Authorization: Bearer <token>")
        with model.lock:
            return JSONResponse(model.live.document(model.learner, model.prequential, model.model_version,
                                                    class_report))

    routes = [Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/classes", classes)]
    if model.live is not None:
        routes += [Route("/", live_page), Route("/live.json", live_json)]
    if model.telemetry.exported:
        routes.append(Route("/metrics", metrics))
    return Starlette(routes=routes)


def class_report(learner: HierarchicalLearner | None, prequential: PrequentialAccuracy, level: int = 0,
                 offset: int = 0, limit: int = MAX_CLASS_PAGE) -> list[dict]:
    """Per level (or only ``level``), the known classes ``offset .. offset+limit``: prequential
    accuracy (null before it was scored), labelled events seen, and replay-memory samples whose
    own label is that class; ``total`` is the level's class count."""
    if learner is None:
        return []
    tree, in_memory = learner.tree, learner.stats().memory_per_class
    report = []
    for lv in range(1, tree.depth + 1):
        if level and lv != level:
            continue
        paths = tree.classes(lv)
        rows = []
        for index in range(offset, min(len(paths), offset + limit)):
            correct, seen = prequential.class_accuracy(lv, index)
            rows.append({"path": paths[index], "prequential_accuracy": correct / seen if seen else None, "seen": seen,
                         "memory_samples": in_memory[tree.global_id_of(lv, index)]})
        report.append({"level": lv, "total": len(paths), "offset": offset, "classes": rows})
    return report


def guarded_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with two guards it lacks: a deadline for each request head (a
    client that opens a connection and trickles bytes is cut off) and a cap on open connections
    (idle sockets must not exhaust the descriptors the checkpoint writer needs). At the cap, a new
    connection closes the oldest one that is not being answered, so a flood of idle or slow
    connections cannot lock out a health probe (or anyone) that sends its request at once."""

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _opened_at = 0.0

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._opened_at = self.loop.time()
            if len(self.connections) > limits.max_connections and not self._close_oldest_waiting():
                transport.close()
                return
            self._arm_head_deadline()

        def _close_oldest_waiting(self) -> bool:
            """Close the oldest other connection with no request in progress; False when every one
            is being answered."""
            waiting = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                       and (c.cycle is None or c.cycle.response_complete) and not c.transport.is_closing()]
            if not waiting:
                return False
            min(waiting, key=lambda c: c._opened_at).transport.close()
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:  # the timer holds this connection and its buffers
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(limits.request_timeout_s, self._head_deadline, self.cycle)

        def _head_deadline(self, cycle_then: object) -> None:
            self._head_timer = None
            if self.cycle is cycle_then and not self.transport.is_closing():  # no new request began
                self.transport.close()

    return GuardedH11Protocol


def require_auth_off_loopback(host: str, limits: HttpLimits) -> None:
    """Serving beyond this machine without a token would let anyone read the model: refuse."""
    if host not in LOOPBACK_HOSTS and limits.token is None:
        raise ValueError(f"--http-host {host} is reachable from other machines: set --http-token (or HLE_HTTP_TOKEN) "
                         "so that /predict, /classes and /metrics need it")


class HttpStartError(RuntimeError):
    """The HTTP server could not start (most often: its port is taken)."""


class HttpServer:
    """uvicorn in a background thread, stoppable; ``start`` returns once it listens, or raises."""

    def __init__(self, model: ServedModel, host: str, port: int, limits: HttpLimits = HttpLimits()) -> None:
        require_auth_off_loopback(host, limits)
        config = uvicorn.Config(build_app(model, limits), host=host, port=port, log_level="warning",
                                http=guarded_protocol(limits), timeout_keep_alive=5,
                                h11_max_incomplete_event_size=16 * 1024)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.address = f"{host}:{port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise HttpStartError(f"cannot serve HTTP on {self.address} (is the port in use?); choose another "
                                     "--http-port, or 0 for no HTTP")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
