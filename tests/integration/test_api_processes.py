"""``broker api --workers N``: several API processes on one port, each with its own relay, every case delivered once;
a process that dies is replaced; settings that cannot be shared by processes are refused with a reason."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from support.envelopes import case_created
from support.harness import free_port, write_mappings
from support.processes import BrokerProcess, broker_env, run_broker
from support.receiver import WebhookReceiver
from support.services import AMQP_URL, delete_broker_namespace, postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def _children(pid: int) -> set[int]:
    """The API processes uvicorn's supervisor ``pid`` runs (not its resource tracker, nor one dead but unreaped)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(parent) == pid and state != "Z" and b"spawn_main" in command:
                found.add(int(entry.name))
    return found


def _wait_for_children(pid: int, count: int, timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while len(children := _children(pid)) != count:
        assert time.monotonic() < deadline, f"{len(children)} API processes, not {count}"
        time.sleep(0.1)
    return children


def _wait_gone(pids: set[int], timeout: float = 15) -> None:
    """API processes whose supervisor was killed stop by themselves; the test waits for it."""
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids):
        assert time.monotonic() < deadline, "API processes outlived their supervisor"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _post(base_url: str, key: str, case_id: str) -> int:
    # A connection of its own each time, so that the processes share the requests between them.
    answer = httpx.post(f"{base_url}/v1/cases", json=case_created(case_id), timeout=30,
                        headers={"Authorization": f"Bearer {key}", "Connection": "close"})
    return answer.status_code


def test_two_api_processes_share_the_port_and_every_case_is_delivered_once(
        tmp_path: Path, receiver: WebhookReceiver, namespace: str) -> None:
    with postgres_database() as url:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        (tmp_path / "schedules").mkdir()
        env = broker_env(database_url=url, amqp_url=AMQP_URL, amqp_namespace=namespace, http_port=str(port),
                         mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                         schedules_dir=str(tmp_path / "schedules"), log_level="WARNING")
        assert run_broker("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
        key = run_broker("keys", "create", "crm", env=env, cwd=tmp_path).stdout.strip().splitlines()[-1]
        api = BrokerProcess("api", "--workers", "2", env=env, cwd=tmp_path, name="api")
        worker = BrokerProcess("worker", env=env, cwd=tmp_path, name="worker")
        try:
            api.wait_for_http(f"{base_url}/health/ready")
            first = _wait_for_children(api.process.pid, 2)
            assert [_post(base_url, key, f"MULTI-{n}") for n in range(30)] == [202] * 30

            os.kill(min(first), signal.SIGKILL)  # one process dies: the supervisor starts another
            _wait_gone({min(first)})  # the signal takes a moment: until then the process still looks alive
            replaced = _wait_for_children(api.process.pid, 2)
            assert min(first) not in replaced
            api.wait_for_http(f"{base_url}/health/ready")
            assert [_post(base_url, key, f"MULTI-{n}") for n in range(30, 60)] == [202] * 30
            received = receiver.wait_for(60, timeout=60)
            counts = receiver.event_counts()
            assert len(received) == 60 and set(counts.values()) == {1}  # each case once, by one relay or another
            metrics = httpx.get(f"{base_url}/metrics").text
            accepted = [line for line in metrics.splitlines()
                        if line.startswith("casebridge_events_accepted_total{") and 'via="http"' in line]
            # Any process answers /metrics with every process's counts, the dead one's included.
            assert accepted and float(accepted[0].rsplit(" ", 1)[1]) == 60
            assert api.terminate() == 0, api.output()
            assert not _children(api.process.pid)
        finally:
            api.kill()
            worker.terminate()
            delete_broker_namespace(namespace)


def test_api_processes_stop_by_themselves_when_their_supervisor_is_killed(
        tmp_path: Path, receiver: WebhookReceiver, namespace: str) -> None:
    with postgres_database(migrated=True) as url:
        port = free_port()
        env = broker_env(database_url=url, amqp_url=AMQP_URL, amqp_namespace=namespace, http_port=str(port),
                         mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                         schedules_dir=str(tmp_path), log_level="WARNING")
        api = BrokerProcess("api", "--workers", "2", env=env, cwd=tmp_path, name="api")
        try:
            api.wait_for_http(f"http://127.0.0.1:{port}/health/ready")
            processes = _wait_for_children(api.process.pid, 2)
        finally:
            api.kill()  # SIGKILL: the supervisor cannot pass anything on
        _wait_gone(processes)
        delete_broker_namespace(namespace)


@pytest.mark.parametrize(("settings", "reason"), [
    ({"amqp_url": "memory://"}, "--workers needs RabbitMQ"),
    ({"amqp_url": AMQP_URL, "database_url": "sqlite:///casebridge.db"}, "--workers needs PostgreSQL"),
])
def test_settings_processes_cannot_share_are_refused_with_the_reason(
        tmp_path: Path, receiver: WebhookReceiver, settings: dict[str, str], reason: str) -> None:
    env = broker_env(mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                     schedules_dir=str(tmp_path), **settings)
    refused = run_broker("api", "--workers", "2", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert reason in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
