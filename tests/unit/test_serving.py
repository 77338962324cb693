"""The HTTP server's limits and authentication, against a real uvicorn on a loopback port, with a
real (small) model behind it and no Kafka."""

import http.client
import json
import threading
import time

import pytest
import torch

from connectors.broker import free_port
from hle_stream.core.config import LearnerConfig
from hle_stream.core.learner import HierarchicalLearner
from hle_stream.metrics.prequential import PrequentialAccuracy
from hle_stream.service.config import HttpLimits
from hle_stream.service.serving import HttpServer
from hle_stream.service.telemetry import NO_TELEMETRY

DIM = 4


class Model:
    """What the daemon exposes to the server, around a learner that knows a few classes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._learner = HierarchicalLearner(LearnerConfig(memory_size=8, batch_size=4, device="cpu"), (DIM,),
                                            torch.float32)
        self._learner.observe(torch.randn(8, DIM), ["a", "a/x", "b", "b/y"] * 2)
        self.snapshot = self._learner.predictor()
        self.last_tick = time.monotonic()
        self.kafka_ok = self.model_finite = self.checkpoint_ok = self.writer_ok = True
        self.live = None
        self.confidence_threshold = 0.0
        self.max_abs_feature = 1e6
        self.telemetry = NO_TELEMETRY
        self._prequential = PrequentialAccuracy()

    learner = property(lambda self: self._learner)
    prequential = property(lambda self: self._prequential)

    def with_text_features(self, events):
        return events  # a model of features; text events are the daemon's (tests/unit/test_text_events.py)


@pytest.fixture
def serve():
    servers = []

    def start(**limits):
        model, port = Model(), free_port()
        server = HttpServer(model, "127.0.0.1", port, HttpLimits(**limits))
        server.start()
        deadline = time.monotonic() + 30
        while not server.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        servers.append(server)
        return model, port

    yield start
    for server in servers:
        server.stop()


def _call(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    answer = connection.getresponse()
    result = answer.status, answer.headers, json.loads(answer.read() or b"null")  # headers: case-insensitive
    connection.close()
    return result


def _events(n):
    return json.dumps([{"id": f"q{i}", "x": [0.1 * i] * DIM} for i in range(n)]).encode()


def test_with_a_token_predict_classes_and_metrics_need_it_and_the_probes_stay_open(serve):
    _, port = serve(token="s3cret")
    assert _call(port, "POST", "/predict", _events(1))[0] == 401
    assert _call(port, "POST", "/predict", _events(1), {"Authorization": "Bearer wrong"})[0] == 401
    status, _, answer = _call(port, "POST", "/predict", _events(2), {"Authorization": "Bearer s3cret"})
    assert status == 200 and [p["id"] for p in answer["predictions"]] == ["q0", "q1"]
    assert _call(port, "GET", "/classes")[0] == 401
    assert _call(port, "GET", "/healthz")[0] == 200 and _call(port, "GET", "/readyz")[0] == 200


def test_serving_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(ValueError, match="set --http-token"):
        HttpServer(Model(), "0.0.0.0", free_port(), HttpLimits())


def test_too_large_bodies_and_too_many_events_get_413_and_the_connection_is_closed(serve):
    _, port = serve(max_body_bytes=2000, max_events=3)
    status, headers, answer = _call(port, "POST", "/predict", b"[" + b" " * 5000 + b"]")
    assert status == 413 and answer["error"] == "too_large" and headers["Connection"] == "close"
    status, _, answer = _call(port, "POST", "/predict", _events(4))
    assert status == 413 and answer["error"] == "too_many_events"
    assert _call(port, "POST", "/predict", _events(3))[0] == 200


def test_once_predictions_used_their_cpu_share_the_next_request_waits_a_second_then_gets_503(serve):
    _, port = serve(predict_share=1e-9)
    assert _call(port, "POST", "/predict", _events(1))[0] == 200  # uses the (tiny) share
    started = time.monotonic()
    status, headers, answer = _call(port, "POST", "/predict", _events(1))
    assert status == 503 and answer["error"] == "busy" and headers["retry-after"] == "1"
    assert time.monotonic() - started >= 0.9  # refusals cannot be turned into a flood
    assert _call(port, "GET", "/healthz")[0] == 200


def test_readiness_fails_while_the_weights_are_not_finite_or_checkpoints_fail(serve):
    model, port = serve()
    model.model_finite = False
    status, _, answer = _call(port, "GET", "/readyz")
    assert status == 503 and answer["finite"] is False
    model.model_finite, model.checkpoint_ok = True, False
    status, _, answer = _call(port, "GET", "/readyz")
    assert status == 503 and answer["checkpoint"] is False


def test_classes_are_served_a_page_at_a_time(serve):
    _, port = serve()
    _, _, answer = _call(port, "GET", "/classes?level=2&offset=1&limit=1")
    (level,) = answer["levels"]
    assert level["level"] == 2 and level["total"] == 2 and [c["path"] for c in level["classes"]] == ["b/y"]


def test_health_probes_answer_while_idle_connections_fill_every_slot(serve):
    """At the connection cap a new connection closes the oldest one that is not being answered:
    idle or trickling sockets cannot lock the probes out."""
    import socket

    _, port = serve(max_connections=50)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(80)]  # more than the cap
    try:
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a slow client: its head never ends
        answered = [_call(port, "GET", "/healthz")[0] for _ in range(40)]
        assert answered.count(200) >= 38  # ≥ 95 %
    finally:
        for connection in idle:
            connection.close()
