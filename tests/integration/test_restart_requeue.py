"""A graceful restart of the embedded default strands nothing: its in-process queues are refilled from the store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from support.envelopes import case_created
from support.harness import free_port, write_mappings
from support.processes import BrokerProcess, broker_env, run_broker
from support.receiver import WebhookReceiver

from broker.store.database import Store
from broker.store.tables import DeliveryRecord

pytestmark = pytest.mark.slow


def test_deliveries_queued_in_process_when_broker_run_stopped_are_delivered_after_a_restart(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    port = free_port()
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    database_url = f"sqlite:///{tmp_path / 'casebridge.db'}"
    env = broker_env(database_url=database_url, mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                     schedules_dir=str(schedules), http_port=str(port))
    assert run_broker("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    key = run_broker("keys", "create", "crm", env=env, cwd=tmp_path).stdout.strip().splitlines()[-1]
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    receiver.outage(3600)  # the target is down: its circuit opens and new deliveries wait in the queue
    first = BrokerProcess("run", env=env, cwd=tmp_path, name="first")
    try:
        first.wait_for_http(f"http://127.0.0.1:{port}/health")
        for number in range(3):
            assert api.post("/v1/cases", json=case_created(f"RQ-{number}")).status_code == 202
        first.wait_for_output("circuit.open")
        for number in range(3, 13):
            assert api.post("/v1/cases", json=case_created(f"RQ-{number}")).status_code == 202
    finally:
        assert first.terminate() == 0, first.output()
    store = Store(database_url)
    try:
        states = _states(store)
        assert "pending" in states, f"nothing was left in the in-process queue, so nothing is tested: {states}"

        receiver.outage(0)
        second = BrokerProcess("run", env=env, cwd=tmp_path, name="second")
        try:
            second.wait_for_http(f"http://127.0.0.1:{port}/health")
            assert set(_states_once_settled(store)) == {"delivered"}, second.output()
        finally:
            assert second.terminate() == 0, second.output()
        assert set(receiver.event_counts("/highways").values()) == {1}
        assert len(receiver.event_counts("/highways")) == 13
    finally:
        store.dispose()
        api.close()


def _states(store: Store) -> list[str]:
    with store.read() as session:
        return list(session.scalars(select(DeliveryRecord.state).where(DeliveryRecord.target == "highways")))


def _states_once_settled(store: Store, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(_states(store)) != {"delivered"}:
        time.sleep(0.2)
    return _states(store)
