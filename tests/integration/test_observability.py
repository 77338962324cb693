"""Observability against the real thing: Prometheus (Debian's package) scrapes a live daemon fed by
the producer simulation through the local broker, and every PromQL expression the ops/ files
hold is asked of it.

CI sets ``HLE_REQUIRE_PROMETHEUS=1`` (and installs Prometheus), so a missing binary fails there;
elsewhere the test is skipped with the install command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer

from connectors.broker import free_port
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from hle_stream.core.methods import DEFAULT_METHOD

OPS = Path(__file__).resolve().parents[2] / "ops"
EXE = shutil.which("hle-stream") or str(Path(sys.executable).parent / "hle-stream")
TOPIC = "obs-events"
EVENTS = 1200  # synthetic: 12 leaves x 100, streamed at RATE/s so that expansions fall between scrapes
RATE = 120
BAD = [b"not json", b'{"id": "b1"}', b'{"id": "b2", "x": [1, 2]}']


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: apt-get install prometheus"
        if os.environ.get("HLE_REQUIRE_PROMETHEUS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict]:
        answer = _get_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def query_range(self, expr: str, start: float, end: float) -> list[dict]:
        params = {"query": expr, "start": start, "end": end, "step": 1}
        try:
            answer = _get_json(f"{self.base}/api/v1/query_range?" + urllib.parse.urlencode(params))
        except urllib.error.HTTPError as err:  # 400: the expression does not parse
            raise AssertionError(f"{expr}: {err.read().decode()}") from None
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]


def _prometheus_config(tmp: Path, daemon_port: int) -> Path:
    """ops/prometheus.yml aimed at the test's daemon, scraping and evaluating every second."""
    text = (OPS / "prometheus.yml").read_text()
    for old, new in [("daemon:8080", f"127.0.0.1:{daemon_port}"), ("scrape_interval: 15s", "scrape_interval: 1s"),
                     ("evaluation_interval: 15s", "evaluation_interval: 1s")]:
        assert old in text, old
        text = text.replace(old, new)
    shutil.copytree(OPS / "rules", tmp / "rules")
    (tmp / "prometheus.yml").write_text(text)
    return tmp / "prometheus.yml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, start_broker):
    prometheus_bin = _binary("prometheus")
    tmp = tmp_path_factory.mktemp("observability")
    with start_broker(tmp / "broker.log") as broker:
        settings = KafkaSettings(broker.bootstrap_servers)
        ensure_topics(settings, {TOPIC: 1, f"{TOPIC}-pred": 1, f"{TOPIC}-dlq": 1})
        daemon_port, prometheus_port = free_port(), free_port()
        daemon = subprocess.Popen(
            [EXE, "run", "--bootstrap-servers", broker.bootstrap_servers, "--input-topic", TOPIC,
             "--predictions-topic", f"{TOPIC}-pred", "--dead-letter-topic", f"{TOPIC}-dlq", "--group-id", "obs",
             "--http-port", str(daemon_port), "--checkpoint-dir", str(tmp / "ckpt"),
             "--checkpoint-every-events", "200", "--memory-size", "64",
             "--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500"],
            stderr=open(tmp / "daemon.log", "wb"), env={"OMP_NUM_THREADS": "1", **os.environ})
        prometheus = subprocess.Popen(
            [prometheus_bin, f"--config.file={_prometheus_config(tmp, daemon_port)}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "wb"))
        try:
            prom = Prometheus(f"http://127.0.0.1:{prometheus_port}")
            _wait_until(lambda: urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2).status == 200, 60,
                        "Prometheus to be ready")
            started = time.time()
            produced = subprocess.run(
                [EXE, "produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", TOPIC,
                 "--dataset", "synthetic", "--events", str(EVENTS), "--rate", str(RATE),
                 "--unlabelled-fraction", "0.1"], capture_output=True, text=True, timeout=180)
            assert produced.returncode == 0, produced.stderr
            producer = KafkaProducer(**settings.client())  # after the stream: the first event sets the input shape
            for value in BAD:
                producer.send(TOPIC, value)
            producer.flush()
            producer.close()
            # HTTP predictions, so the http series carry data too (once the daemon has a model:
            # on a loaded machine it may still be starting when the stream has been produced)
            body = json.dumps([{"id": f"q{i}", "x": [0.0] * 32} for i in range(4)]).encode()

            def predict() -> bytes | None:
                request = urllib.request.Request(f"http://127.0.0.1:{daemon_port}/predict", data=body)
                try:
                    return urllib.request.urlopen(request, timeout=10).read()
                except urllib.error.HTTPError as err:
                    if err.code == 503:  # no model yet
                        return None
                    raise AssertionError(f"/predict: {err.code} {err.read().decode()}") from None

            _wait_until(predict, 120, "the daemon to serve /predict")
            total = EVENTS + len(BAD)
            _wait_until(lambda: prom.query(f"hle_events_consumed_total >= {total}"), 120,
                        "Prometheus to see every event consumed")
            time.sleep(3)  # a few more scrapes and rule evaluations after the end
            yield prom, started, daemon_port, total
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            prometheus.terminate()
            prometheus.wait(30)


def test_the_daemon_series_exist_in_prometheus_with_sane_values(stack):
    prom, _, daemon_port, total = stack
    assert prom.value('up{job="hle-stream"}') == 1
    assert prom.value("hle_events_consumed_total") == total
    labelled = prom.value("hle_events_trained_total")
    predicted = prom.value('hle_events_predicted_total{source="stream"}')
    assert predicted == EVENTS  # every valid event predicted once
    assert 0.8 * EVENTS <= labelled < EVENTS  # 10 % sent without a label
    assert prom.value('hle_events_predicted_total{source="http"}') == 4
    reasons = {r["metric"]["reason"]: float(r["value"][1]) for r in prom.query("hle_dead_letters_total")}
    assert {k: v for k, v in reasons.items() if v} == {"not_json": 1, "missing_field": 1, "wrong_shape": 1}
    known = {r["metric"]["level"]: float(r["value"][1]) for r in prom.query("hle_known_classes")}
    assert known == {"1": 3, "2": 6, "3": 12}  # the synthetic tree: 3 -> 6 -> 12
    for r in prom.query("hle_prequential_accuracy_ratio") + prom.query("hle_anytime_accuracy_ratio"):
        assert 0.0 <= float(r["value"][1]) <= 1.0
    assert prom.value('hle_prequential_accuracy_ratio{level="1"}') > 0.5  # 3 well-separated clusters
    assert 0.0 < prom.value("hle_served_node_precision_ratio") <= 1.0
    assert 0.0 < prom.value("hle_served_depth_mean") <= 3.0
    assert 2.0 <= prom.value("hle_served_mistake_severity_mean") <= 6.0  # distances on a 3-level tree: 2, 4 or 6
    assert 0.0 <= prom.value("hle_confidence_threshold") < 1.0  # calibrated to --target-precision (0.95)
    assert prom.value("sum(hle_replay_memory_samples)") == prom.value("hle_replay_memory_capacity_samples") == 64
    assert prom.value("sum(hle_replay_memory_share_ratio)") == pytest.approx(1.0)
    assert prom.value("hle_replay_memory_bytes") > 64 * 32 * 4
    assert prom.value('hle_consumer_lag_messages{partition="0"}') == 0
    assert prom.value("hle_train_batch_duration_seconds_count") > 0
    assert prom.value("hle_model_version") > 0
    assert time.time() - prom.value("hle_checkpoint_last_success_timestamp_seconds") < 120
    assert prom.value("hle_checkpoint_size_bytes") > 0
    assert prom.value('process_resident_memory_bytes{job="hle-stream"}') > 50e6
    assert prom.value("hle_gpu_memory_allocated_bytes") == 0  # on the CPU
    build = prom.query("hle_build_info")[0]["metric"]
    assert build["device"] == "cpu" and build["method"] == DEFAULT_METHOD
    assert prom.value("hle_throughput_events_per_second") > 0

    classes = _get_json(f"http://127.0.0.1:{daemon_port}/classes")["levels"]
    assert [len(level["classes"]) for level in classes] == [3, 6, 12]
    assert sum(c["memory_samples"] for level in classes for c in level["classes"]) == 64
    # a class is scored once it is known: the first micro-batch (64) came before any class was
    scored = sum(c["seen"] for c in classes[0]["classes"])
    assert labelled - 64 <= scored <= labelled


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "hle-stream.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    assert len(exprs) > 20
    # Grafana's rate interval is 4 scrapes at least; the test scrapes every second
    return [e.replace("$__rate_interval", "1m") for e in exprs]


def _rules(kind: str) -> list[dict]:
    import yaml

    groups = yaml.safe_load((OPS / "rules" / f"hle-{kind}.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _replica_only_series() -> set[str]:
    """Series only a predictor replica exports (this stack runs a daemon alone)."""
    from hle_stream.service.telemetry import Telemetry

    names = lambda role: {f.name for f in Telemetry(8, DEFAULT_METHOD, "cpu", role).registry.collect()}  # noqa: E731
    return names("replica") - names("daemon")


def test_every_dashboard_expression_parses_and_returns_data(stack):
    prom, started, _, _ = stack
    replica_only = _replica_only_series()
    assert replica_only
    for expr in _dashboard_expressions():
        data = prom.query_range(expr, started, time.time())  # parses, or raises
        if not any(name in expr for name in replica_only):  # a replica's panels have none without one
            assert data, f"no data: {expr}"


def test_every_rule_expression_parses_and_the_recorded_series_have_data(stack):
    prom, started, _, _ = stack
    for rule in _rules("recording"):
        assert prom.query_range(rule["expr"], started, time.time()), f"no data: {rule['expr']}"
        assert prom.query(rule["record"]), f"Prometheus has not recorded {rule['record']}"
    for rule in _rules("alerts"):
        prom.query_range(rule["expr"], started, time.time())  # parses (a healthy stream fires nothing)
    firing = [a["labels"]["alertname"] for a in _get_json(f"{prom.base}/api/v1/alerts")["data"]["alerts"]
              if a["state"] == "firing"]
    assert firing == []
    loaded = {r["name"] for g in _get_json(f"{prom.base}/api/v1/rules")["data"]["groups"] for r in g["rules"]}
    assert loaded == {r.get("record") or r.get("alert") for r in _rules("recording") + _rules("alerts")}


def test_promtool_accepts_the_config_and_rules_and_the_alert_unit_tests_pass():
    promtool = _binary("promtool")
    for args in (["check", "config", str(OPS / "prometheus.yml")], ["check", "config", str(OPS / "prometheus-fleet.yml")],
                 ["check", "rules", str(OPS / "rules" / "hle-recording.yml"), str(OPS / "rules" / "hle-alerts.yml")],
                 ["test", "rules", str(OPS / "rules" / "hle-alerts.test.yml")]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not found: apt-get install chromium"
        if os.environ.get("HLE_REQUIRE_CHROMIUM"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_live_page_in_a_real_browser_shows_what_the_daemon_measures(stack, tmp_path):
    """Headless Chromium loads / from the daemon, runs its script (which reads /live.json) and the
    page it renders is checked against /metrics; a screenshot is kept beside the test's files."""
    _, _, daemon_port, _ = stack
    browser = _chromium()
    url = f"http://127.0.0.1:{daemon_port}/"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
              f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-loaded="true"' in dom, dom[-2000:]
    metrics = urllib.request.urlopen(f"{url}metrics", timeout=10).read().decode()
    for level in ("1", "2", "3"):
        shown = float(re.search(rf'id="accuracy-{level}" data-value="([0-9.e-]+)"', dom).group(1))
        exported = float(re.search(rf'^hle_prequential_accuracy_ratio{{level="{level}"}} (\S+)$', metrics,
                                   re.MULTILINE).group(1))
        assert abs(shown - exported) < 1e-9, (level, shown, exported)
        memory = re.search(rf'id="memory-{level}">(\d+)<', dom).group(1)
        assert re.search(rf'^hle_replay_memory_samples{{level="{level}"}} {memory}(\.0)?$', metrics, re.MULTILINE)
    curves = re.findall(r'<polyline class="level" data-level="(\d+)"', dom)  # (the script's own text has none)
    assert curves == ["1", "2", "3"] and len(re.findall(r'<line class="expansion" x1="[\d.]', dom)) >= 3
    assert "level 3: 12 classes" in dom  # the tree
    shown = re.search(r'id="predictions">(.*?)</tbody>', dom, re.DOTALL).group(1)
    assert shown.count("<tr>") == 20 and "›" in shown  # the last predictions, their paths coarse to fine
    screenshot = tmp_path / "live-page.png"
    subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1280,900", url], capture_output=True,
                   timeout=120)
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot of the live page: {screenshot}")
