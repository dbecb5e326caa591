"""``broker api`` while PostgreSQL terminates its connections: 503 with Retry-After and one JSON line, never a 500."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from support.envelopes import case_created
from support.harness import free_port, write_mappings
from support.processes import BrokerProcess, broker_env, run_broker
from support.receiver import WebhookReceiver
from support.services import POSTGRES_URL, postgres_database

pytestmark = pytest.mark.postgres


def _terminate(database: str, *, refuse_new: bool | None = None) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        if refuse_new is not None:
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(not refuse_new).lower()}')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                      "AND pid <> pg_backend_pid()", (database,))


def test_a_database_outage_is_answered_503_with_retry_after_and_logged_as_json(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    with postgres_database() as url:
        database = url.rsplit("/", 1)[1]
        port = free_port()
        schedules = tmp_path / "schedules"
        schedules.mkdir()
        env = broker_env(database_url=url, mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                         schedules_dir=str(schedules), http_port=str(port))
        assert run_broker("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
        created = run_broker("keys", "create", "crm", env=env, cwd=tmp_path)
        key = created.stdout.strip().splitlines()[-1]
        api = BrokerProcess("api", env=env, cwd=tmp_path, name="api")
        try:
            api.wait_for_http(f"http://127.0.0.1:{port}/health")
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                                  timeout=30)
            assert client.post("/v1/cases", json=case_created("OUT-0")).status_code == 202

            statuses: list[int] = []
            stop = threading.Event()

            def keep_terminating() -> None:
                while not stop.is_set():
                    _terminate(database)
                    time.sleep(0.02)

            killer = threading.Thread(target=keep_terminating, daemon=True)
            killer.start()
            for n in range(60):
                response = client.post("/v1/cases", json=case_created(f"OUT-{n + 1}"))
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "5"
                    assert response.json()["error"] == "unavailable"
            stop.set()
            killer.join()
            assert set(statuses) <= {202, 503}, statuses

            _terminate(database, refuse_new=True)  # the store is gone altogether
            try:
                down = [client.post("/v1/cases", json=case_created("OUT-X")), client.get("/v1/cases/OUT-0")]
            finally:
                _terminate(database, refuse_new=False)
            for response in down:
                assert response.status_code == 503 and response.headers["retry-after"] == "5", response.text
            assert client.get("/v1/cases/OUT-0").status_code == 200  # and back again
            client.close()
        finally:
            api.terminate()
        output = api.output()
        assert "Traceback" not in output
        logged = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert len(logged) == len([line for line in output.splitlines() if line.strip()]) - 1  # the banner
        assert any(line["event"] == "api.database_unavailable" and line["level"] == "error" for line in logged)
