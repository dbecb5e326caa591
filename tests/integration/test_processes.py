"""The broker as operators run it: separate processes on RabbitMQ and PostgreSQL, and the one-process default."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.envelopes import case_created
from support.harness import REPO, free_port, write_mappings
from support.processes import BrokerProcess, broker_env, run_broker
from support.receiver import WebhookReceiver
from support.services import AMQP_URL, delete_broker_namespace, postgres_database
from support.soap_targets import running_demo

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def rabbitmq_namespace() -> Iterator[str]:
    namespace = f"cbproc-{uuid.uuid4().hex[:10]}"
    yield namespace
    delete_broker_namespace(namespace)


def json_lines(output: str) -> list[dict[str, object]]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_scaled_deployment_api_worker_and_scheduler_processes(
    tmp_path: Path, receiver: WebhookReceiver, postgres_url: str, rabbitmq_namespace: str
) -> None:
    port = free_port()
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    env = broker_env(database_url=postgres_url, amqp_url=AMQP_URL, amqp_namespace=rabbitmq_namespace,
                     mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                     schedules_dir=str(schedules), http_port=str(port))

    refused = BrokerProcess("api", env=env, cwd=tmp_path, name="api-before-upgrade")
    assert refused.process.wait(30) != 0
    assert "broker db upgrade" in refused.output()

    upgrade = run_broker("db", "upgrade", env=env, cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    key = run_broker("keys", "create", "crm", env=env, cwd=tmp_path).stdout.strip().splitlines()[-1]

    api = BrokerProcess("api", env=env, cwd=tmp_path, name="api")
    workers = [BrokerProcess("worker", env=env, cwd=tmp_path, name=f"worker-{n}") for n in range(2)]
    scheduler = BrokerProcess("scheduler", env=env, cwd=tmp_path, name="scheduler")
    processes = [api, *workers, scheduler]
    try:
        api.wait_for_http(f"http://127.0.0.1:{port}/health")
        for worker in workers:
            worker.wait_for_output('"consumer.started"')
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"})
        envelopes = [case_created(f"PROC-{n:03d}") for n in range(20)]
        for envelope in envelopes:
            assert client.post("/v1/cases", json=envelope).status_code == 202
        receiver.wait_for(20, "/highways", timeout=60)
        assert set(receiver.event_counts("/highways").values()) == {1}

        view = client.get("/v1/cases/PROC-007").json()
        assert [d["state"] for d in view["deliveries"]] == ["delivered"]
    finally:
        exit_codes = [process.terminate() for process in processes]
    assert exit_codes == [0, 0, 0, 0], [process.output()[-2000:] for process in processes]

    # One JSON line per message step, with the ids support staff search by, and no personal data.
    worker_lines = [line for worker in workers for line in json_lines(worker.output())]
    delivered = [line for line in worker_lines if line.get("event") == "delivery.delivered"]
    assert {line["event_id"] for line in delivered} == {envelope["event_id"] for envelope in envelopes}
    assert all(line["case_id"] and line["target"] == "highways" and line["correlation_id"] for line in delivered)
    accepted = [line for line in json_lines(api.output()) if line.get("event") == "event.accepted"]
    assert len(accepted) == 20
    everything = "".join(process.output() for process in processes)
    for personal in ("Ada Lovelace", "ada@example.org", "020 7946 0000", "Deep pothole outside"):
        assert personal not in everything


def test_broker_run_on_the_embedded_default(tmp_path: Path, receiver: WebhookReceiver) -> None:
    """No services at all: SQLite in the working folder and the in-process transport."""
    port = free_port()
    env = broker_env(mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                     schedules_dir=str(REPO / "schedules"), http_port=str(port))
    key = run_broker("keys", "create", "crm", env=env, cwd=tmp_path).stdout.strip().splitlines()[-1]
    broker = BrokerProcess("run", env=env, cwd=tmp_path, name="run")
    try:
        broker.wait_for_http(f"http://127.0.0.1:{port}/health")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"})
        receipt = client.post("/v1/cases", json=case_created("EMB-1"))
        assert receipt.status_code == 202, receipt.text
        receiver.wait_for(1, "/highways")
        assert client.get("/docs").status_code == 200
        assert "/v1/cases" in client.get("/openapi.json").json()["paths"]
    finally:
        assert broker.terminate() == 0, broker.output()
    assert (tmp_path / "casebridge.db").exists()
    history = run_broker("case", "history", "EMB-1", "--json", env=env, cwd=tmp_path)
    assert [entry["step"] for entry in json.loads(history.stdout)["entries"]] == [
        "received", "validated", "routed", "delivered"]


def test_the_demo_shows_a_case_reach_confirm_and_its_progress_come_back(tmp_path: Path) -> None:
    """What the README promises a newcomer, on the embedded default with the shipped mappings."""
    with running_demo(tmp_path) as (demo, client):
        pothole = case_created("DEMO-1", reporter={"kind": "anonymous"})
        pothole["occurred_at"] = "2026-01-05T09:15:00+00:00"
        assert client.post("/v1/cases", json=pothole).status_code == 202
        demo.wait_for_output("received case.status_changed for case DEMO-1", timeout=60)
        case = client.get("/v1/cases/DEMO-1").json()
        assert case["external_refs"]["confirm"].isdigit()
        assert case["status"] in ("action_scheduled", "fixed")
