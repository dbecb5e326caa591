"""What operators watch: the metrics count real traffic, and readiness fails, saying why, when the store is gone."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from support.envelopes import case_created
from support.harness import RunningBroker, free_port, write_mappings
from support.processes import BrokerProcess, broker_env, run_broker
from support.proxy import CuttableProxy
from support.receiver import Answer, WebhookReceiver
from support.services import AMQP_URL, delete_broker_namespace, postgres_database

from broker.settings import Settings

SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>[-+0-9.eE]+|NaN|\+Inf)$')


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample at ``url``, by name and labels."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain"), response.text
    samples = {}
    for line in response.text.splitlines():
        found = SAMPLE.match(line)
        if found:
            labels = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', found["labels"] or ""))
            samples[(found["name"], labels)] = float(found["value"])
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_metrics_count_what_happens(running: RunningBroker, receiver: WebhookReceiver) -> None:
    metrics = f"{running.base_url}/metrics"
    before = scrape(metrics)
    receiver.answer("/environment", Answer(422, {"error": "ward not recognised"}))
    for number in range(5):
        assert running.post_case(case_created(f"MET-{number}")).status_code == 202
    assert running.post_case(case_created("MET-FAIL", service_code="environment.noise")).status_code == 202
    refused = running.post_case(case_created("MET-BAD", service_code="highways.unicorns"))
    assert refused.status_code == 422
    running.wait_settled()
    time.sleep(5.1)  # the store's gauges are read at most every five seconds, whoever scrapes
    after = scrape(metrics)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("casebridge_events_accepted_total", source="crm", via="http", event_type="case.created") == 6
    assert grew("casebridge_events_refused_total", source="crm", reason="unknown_service") == 1
    assert grew("casebridge_deliveries_total", target="highways", outcome="delivered") == 5
    assert grew("casebridge_deliveries_total", target="environment", outcome="failed") == 1
    assert grew("casebridge_delivery_latency_seconds_count", target="highways") == 5
    assert grew("casebridge_delivery_latency_seconds_sum", target="highways") > 0
    open_failures = {labels: count for (name, labels), count in after.items()
                     if name == "casebridge_failed_messages_open"}
    assert sum(open_failures.values()) == 1 and dict(next(iter(open_failures)))["target"] == "environment"
    assert value(after, "casebridge_circuit_state", target="highways", state="closed") == 1
    assert value(after, "casebridge_outbox_backlog") == 0
    assert ("casebridge_delivery_queue_depth", frozenset({("target", "highways")})) in after
    assert value(after, "casebridge_store_bytes") > 0


@pytest.fixture
def store_behind_proxy(settings: Settings) -> Iterator[tuple[Settings, CuttableProxy]]:
    with postgres_database(migrated=True) as url:
        parts = urlsplit(url)
        proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        try:
            yield settings.model_copy(update={"database_url": parts._replace(
                netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()}), proxy
        finally:
            proxy.cut()


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readiness_fails_saying_why_while_the_store_is_unreachable(
        store_behind_proxy: tuple[Settings, CuttableProxy]) -> None:
    settings, proxy = store_behind_proxy
    running = RunningBroker(settings)
    try:
        ready = httpx.get(f"{running.base_url}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready" and ready.json()["checks"]["store"] == "ok"
        proxy.cut()
        failing = httpx.get(f"{running.base_url}/health/ready", timeout=30)
        assert failing.status_code == 503
        body = failing.json()
        assert body["status"] == "failing" and body["failing"] == ["store"]
        assert body["checks"]["store"].startswith("the store cannot be reached")
        assert httpx.get(f"{running.base_url}/health/live", timeout=10).status_code == 200  # the process is up
        proxy.restore()
        deadline = time.monotonic() + 30
        while httpx.get(f"{running.base_url}/health/ready", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "readiness did not come back with the store"
            time.sleep(0.5)
    finally:
        running.stop()


def test_a_worker_serves_its_metrics_and_health_on_its_own_port(tmp_path: Path, receiver: WebhookReceiver) -> None:
    namespace = f"cbops-{time.monotonic_ns() % 10**8}"
    port = free_port()
    with postgres_database(migrated=True) as database_url:
        env = broker_env(database_url=database_url, amqp_url=AMQP_URL, amqp_namespace=namespace,
                         mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                         schedules_dir=str(tmp_path), metrics_port=str(port))
        assert run_broker("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
        worker = BrokerProcess("worker", env=env, cwd=tmp_path, name="worker")
        try:
            worker.wait_for_http(f"http://127.0.0.1:{port}/health/live")
            deadline = time.monotonic() + 30
            while (ready := httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.3)
            assert set(ready.json()["checks"]) == {"store", "relay", "rabbitmq", "consumers"}
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
            assert ("casebridge_outbox_backlog", frozenset()) in samples
        finally:
            assert worker.terminate() == 0, worker.output()
            delete_broker_namespace(namespace)
