"""ops/ files that no engine runs here: the dashboard, provisioning and compose file stay consistent
with what the daemon exports and with each other. (tests/integration/test_observability.py runs the PromQL.)"""

import json
import re
from pathlib import Path

import yaml

from hle_stream.service.telemetry import Telemetry

OPS = Path(__file__).resolve().parents[2] / "ops"
RECORDED = re.compile(r"\bhle:[a-z0-9_:]+")
METRIC = re.compile(r"\b(hle_[a-z0-9_]+|process_[a-z_]+|up)\b")


def _exported(role: str = "daemon") -> set[str]:
    """Every series name a role's registry can produce, labelled gauges not yet set included."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "info": ["_info"]}
    return {family.name + suffix for family in Telemetry(8, "pl-fms", "cpu", role).registry.collect()
            for suffix in suffixes.get(family.type, [""])}


def test_a_replica_exports_its_own_series_and_none_of_a_trainers():
    daemon, replica = _exported("daemon"), _exported("replica")
    assert {"hle_snapshot_age_seconds", "hle_snapshot_regressions_refused_total", "hle_model_version"} <= replica
    assert not {"hle_checkpoint_last_success_timestamp_seconds", "hle_trainer_active", "hle_replay_memory_bytes",
                "hle_prequential_accuracy_ratio"} & replica
    assert "hle_snapshot_age_seconds" not in daemon and "hle_checkpoint_last_success_timestamp_seconds" in daemon


def test_every_metric_the_dashboard_and_rules_name_is_exported():
    exported = _exported("daemon") | _exported("replica") | {"up"}
    dashboard = (OPS / "grafana" / "dashboards" / "hle-stream.json").read_text()
    rules = (OPS / "rules" / "hle-recording.yml").read_text() + (OPS / "rules" / "hle-alerts.yml").read_text()
    named = set(METRIC.findall(dashboard + rules))
    assert named, "no metric names found"
    assert named <= exported, named - exported
    recorded = {r["record"] for g in yaml.safe_load((OPS / "rules" / "hle-recording.yml").read_text())["groups"]
                for r in g["rules"]}
    assert set(RECORDED.findall((OPS / "rules" / "hle-alerts.yml").read_text())) <= recorded


def test_the_dashboard_uses_the_provisioned_datasource_uid():
    datasource = yaml.safe_load((OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "hle-stream.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_compose_file_mounts_files_that_exist_and_scrapes_the_daemon_service():
    compose = yaml.safe_load((OPS / "docker-compose.yml").read_text())
    assert {"kafka", "daemon", "producer", "prometheus", "grafana"} <= set(compose["services"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (OPS / source).exists(), source
    prometheus = yaml.safe_load((OPS / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["daemon:8080"]
    assert compose["services"]["daemon"]["environment"]["HLE_HTTP_PORT"] == "8080"
    for rule_file in prometheus["rule_files"]:
        assert (OPS / rule_file).exists()


def test_the_fleet_compose_file_runs_a_trainer_pair_two_replicas_and_a_store_all_scraped():
    base = yaml.safe_load((OPS / "docker-compose.yml").read_text())["services"]
    fleet = yaml.safe_load((OPS / "docker-compose.fleet.yml").read_text())["services"]
    services = set(base) | set(fleet)
    assert fleet["daemon"]["profiles"] == ["single"]  # the single daemon steps aside
    trainers = {n: s for n, s in fleet.items() if s.get("entrypoint") == ["hle-stream", "run"]}
    replicas = {n: s for n, s in fleet.items() if s.get("entrypoint") == ["hle-stream", "serve"]}
    assert len(trainers) == 2 and len(replicas) == 2
    stores = {s["command"][s["command"].index("--model-store") + 1] for s in [*trainers.values(), *replicas.values()]}
    assert len(stores) == 1 and stores.pop().startswith("s3://")  # one shared model store
    assert all(s["command"][s["command"].index("--role") + 1] == "trainer" for s in trainers.values())
    for service in fleet.values():
        assert set(service.get("depends_on", {})) <= services
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (OPS / volume.split(":")[0]).exists(), volume
    scraped = {t for job in yaml.safe_load((OPS / "prometheus-fleet.yml").read_text())["scrape_configs"]
               for t in job["static_configs"][0]["targets"]}
    ports = {n: ("8081" if n in replicas else "8080") for n in [*trainers, *replicas]}
    assert scraped == {f"{name}:{port}" for name, port in ports.items()}


def test_the_compose_kafka_runs_the_version_and_settings_the_tests_run_against():
    from tests.support.apache_kafka import BROKER_SETTINGS, VERSION

    kafka = yaml.safe_load((OPS / "docker-compose.yml").read_text())["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{VERSION}"
    environment = {key: str(value) for key, value in kafka["environment"].items()}
    expected = {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in BROKER_SETTINGS.items()}
    assert {key: environment.get(key) for key in expected} == expected
