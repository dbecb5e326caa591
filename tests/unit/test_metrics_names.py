"""Every metric the shipped Grafana dashboard and Prometheus alert rules name is one the broker exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from support.harness import REPO, write_mappings

from broker.operations.metrics import exposition
from broker.runtime.process import Broker
from broker.settings import Settings

NAME = re.compile(r"\bcasebridge_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def named_in(text: str) -> set[str]:
    names = set()
    for name in NAME.findall(text):
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names


def exposed(tmp_path: Path) -> set[str]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'metrics.db'}", amqp_url="memory://",
                        mappings_dir=write_mappings(tmp_path / "mappings", "http://127.0.0.1:9"),
                        schedules_dir=tmp_path)
    broker = Broker(settings)
    broker.migrate()
    try:
        text = exposition().decode()
    finally:
        broker.shutdown()
    return named_in(" ".join(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")))


def test_the_dashboard_and_the_alerts_name_only_metrics_that_exist(tmp_path: Path) -> None:
    dashboard = json.loads((REPO / "docker" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((REPO / "docker" / "prometheus-alerts.yml").read_text())
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    wanted = set().union(*(named_in(expression) for expression in expressions))
    # The queues' depth is read from RabbitMQ, so only a broker on RabbitMQ has it (tests/integration checks it).
    have = exposed(tmp_path) | {"casebridge_delivery_queue_depth"}
    assert wanted - have == set(), f"named but not exposed: {sorted(wanted - have)}"
    assert {"casebridge_failed_messages_open", "casebridge_circuit_state", "casebridge_outbox_oldest_seconds",
            "casebridge_schedule_last_success_timestamp_seconds"} <= wanted, "the alerts the operators asked for"


def test_the_name_finder_finds_names() -> None:
    assert named_in('rate(casebridge_deliveries_total[5m]) + casebridge_delivery_latency_seconds_bucket') == {
        "casebridge_deliveries", "casebridge_delivery_latency_seconds"}
