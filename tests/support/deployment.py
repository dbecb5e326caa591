"""A small real deployment for fault injection: `broker worker` processes on RabbitMQ and PostgreSQL, a fake
target, and a CRM publishing over AMQP with pika — every part a separate, killable thing."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pika
from sqlalchemy import create_engine, func, select, text

from broker.store.tables import AuditEntry, CaseRecord, DeliveryRecord, EventRecord
from support.harness import free_port, write_mappings
from support.processes import BrokerProcess, broker_env, run_broker
from support.receiver import WebhookReceiver
from support.services import AMQP_URL, AMQP_USER, pika_connection


@dataclass
class FaultReport:
    """One scenario's figures, as written to docs/reliability.md."""

    scenario: str
    cases: int
    events: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    failures_injected: int = 0
    incomplete_timelines: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Deployment:
    def __init__(self, folder: Path, receiver: WebhookReceiver, database_url: str, namespace: str,
                 *, workers: int = 2, timeout_seconds: float = 5, settings: dict[str, str] | None = None,
                 api: bool = False) -> None:
        self.folder = folder
        self.receiver = receiver
        self.database_url = database_url
        self.namespace = namespace
        schedules = folder / "schedules"
        schedules.mkdir(exist_ok=True)
        self.env = broker_env(database_url=database_url, amqp_url=AMQP_URL, amqp_namespace=namespace,
                              mappings_dir=str(write_mappings(folder / "mappings", receiver.url,
                                                                timeout_seconds=timeout_seconds)),
                              schedules_dir=str(schedules), outbox_poll_seconds="0.2", quick_retries="1",
                              **(settings or {}))
        upgrade = run_broker("db", "upgrade", env=self.env, cwd=folder)
        assert upgrade.returncode == 0, upgrade.stderr
        self.workers: list[BrokerProcess] = []
        self._generation = 0
        for _ in range(workers):
            self.workers.append(self._start_worker())
        for worker in self.workers:
            worker.wait_for_output('"consumer.started"')
        self.api: BrokerProcess | None = None
        self.api_url = ""
        self.api_key = ""
        if api:
            port = free_port()
            self.api_key = run_broker("keys", "create", "crm", env=self.env, cwd=folder).stdout.strip().split()[-1]
            self.api = BrokerProcess("api", env={**self.env, "CASEBRIDGE_HTTP_PORT": str(port)}, cwd=folder,
                                     name="api")
            self.api_url = f"http://127.0.0.1:{port}"
            self.api.wait_for_http(f"{self.api_url}/health")

    def _start_worker(self) -> BrokerProcess:
        self._generation += 1
        return BrokerProcess("worker", env=self.env, cwd=self.folder, name=f"worker-{self._generation}")

    def kill_and_restart(self, index: int) -> None:
        """SIGKILL: no shutdown handler runs, unacknowledged messages go back to their queues."""
        self.workers[index].process.send_signal(signal.SIGKILL)
        self.workers[index].process.wait(10)
        self.workers[index] = self._start_worker()

    def terminate_and_restart(self, index: int) -> int:
        """SIGTERM, as an orchestrator stops a container mid-flow; returns the stopped worker's exit code.

        The replacement is waited for until it consumes, so that the next stop also lands mid-flow rather than
        while the interpreter is still importing, before any handler can be installed.
        """
        code = self.workers[index].terminate()
        self.workers[index] = self._start_worker()
        self.workers[index].wait_for_output('"consumer.started"', timeout=60)
        return code

    def stop(self) -> list[int]:
        codes = [worker.terminate() for worker in self.workers]
        if self.api is not None:
            codes.append(self.api.terminate())
        return codes

    def post(self, client: httpx.Client, document: dict[str, Any]) -> None:
        """The CRM's side over HTTP: post an event and wait for its 202, sending it again after a 5xx or a lost
        answer (the same event_id, so a resend creates nothing)."""
        path = "/v1/cases" if document["event_type"] == "case.created" else \
            f"/v1/cases/{document['case']['case_id']}/events"
        for _ in range(60):
            try:
                response = client.post(f"{self.api_url}{path}", json=document,
                                       headers={"Authorization": f"Bearer {self.api_key}"})
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            if response.status_code == 202:
                return
            assert response.status_code >= 500, (response.status_code, response.text)
            time.sleep(0.5)
        raise AssertionError(f"{document['event_id']} was never accepted over HTTP")

    def publish(self, envelopes: list[dict[str, Any]], at: list[float] | None = None) -> None:
        """The CRM's side: persistent, confirmed publishes to the inbound exchange, reconnecting if cut off;
        ``at`` gives each envelope's time to be sent, in seconds from now (in order)."""
        position = 0
        started = time.monotonic()
        while position < len(envelopes):
            try:
                connection = pika_connection()
                channel = connection.channel()
                channel.confirm_delivery()
                while position < len(envelopes):
                    if at is not None:
                        wait = started + at[position] - time.monotonic()
                        if wait > 0:
                            connection.sleep(wait)
                    document = envelopes[position]
                    channel.basic_publish(
                        f"{self.namespace}.inbound", document["event_type"], json.dumps(document).encode(),
                        pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                             message_id=document["event_id"], user_id=AMQP_USER),
                    )
                    position += 1
                connection.close()
            except pika.exceptions.AMQPError:
                time.sleep(0.5)  # resend the unconfirmed one: intake deduplicates by event_id

    def publish_in_background(self, envelopes: list[dict[str, Any]], at: list[float] | None = None
                              ) -> threading.Thread:
        thread = threading.Thread(target=self.publish, args=(envelopes, at), daemon=True)
        thread.start()
        return thread

    def states(self) -> dict[str, int]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(select(DeliveryRecord.state, func.count()).group_by(DeliveryRecord.state))
                return {state: count for state, count in rows}
        finally:
            engine.dispose()

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for worker in [*self.workers, *([self.api] if self.api else [])]:
                assert worker.process.poll() is None, f"a worker exited:\n{worker.output()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}; deliveries {self.states()}"
            time.sleep(0.25)

    def check(self, report: FaultReport, envelopes: list[dict[str, Any]], path: str = "/highways") -> FaultReport:
        """Count what the target got and what the store says; fills in ``report``."""
        sent = {document["event_id"] for document in envelopes}
        counts = self.receiver.event_counts(path)
        report.events = len(sent)
        report.delivered = len(set(counts) & sent)
        report.duplicates = sum(count - 1 for count in counts.values() if count > 1)
        report.lost = len(sent - set(counts))
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                steps = connection.execute(
                    select(AuditEntry.event_id, AuditEntry.step)
                    .where(AuditEntry.step.in_(("received", "validated", "routed", "delivered")))
                ).all()
                stored_events = connection.scalar(select(func.count()).select_from(EventRecord))
                stored_cases = connection.scalar(select(func.count()).select_from(CaseRecord))
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        timelines: dict[str, list[str]] = {}
        for event_id, step in steps:
            timelines.setdefault(str(event_id), []).append(step)
        report.incomplete_timelines = sum(
            1 for event_id in sent
            if sorted(timelines.get(event_id, [])) != ["delivered", "received", "routed", "validated"]
        )
        report.notes.append(f"{stored_events} events and {stored_cases} cases stored")
        return report


def chaos(every: tuple[float, float], times: int, action: Callable[[int], None]) -> threading.Thread:
    """Run ``action(n)`` ``times`` times at random intervals, on a thread."""

    def run() -> None:
        for n in range(times):
            time.sleep(random.uniform(*every))
            action(n)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
