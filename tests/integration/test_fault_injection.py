"""Break things for real and count: worker processes killed, RabbitMQ connections cut, the target down or slow.

Each scenario runs `broker worker` processes against the real RabbitMQ and PostgreSQL with a CRM publishing over
AMQP (pika). Afterwards the target's own counts and the store must agree: every case delivered exactly once,
nothing lost, every timeline complete. The figures are written to docs/reliability.md at the end of the module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.deployment import Deployment, FaultReport, chaos
from support.envelopes import case_created, note_added, status_changed
from support.harness import REPO
from support.receiver import Answer, WebhookReceiver
from support.services import delete_broker_namespace, postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.soak]

#: Cases for the process-kill scenario (the figure in docs/reliability.md); override to run a longer soak.
KILL_CASES = int(os.environ.get("CASEBRIDGE_FAULT_CASES", "10000"))
REPORTS: list[FaultReport] = []


#: Where the figures go: each scenario's as JSON as it finishes, and the whole page once every scenario ran.
#: ``scripts/copy-reliability-figures.sh`` copies the page into docs/reliability.md; no test writes into docs/.
RESULTS = REPO / "build" / "reliability"


@pytest.fixture(scope="module", autouse=True)
def write_reliability_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Write the figures' page once every scenario in this module ran and reported: never a partial page."""
    scenarios = [item for item in request.session.items if item.module is request.module]
    yield
    if REPORTS and len(REPORTS) == len(scenarios) == len([name for name in dir(request.module)
                                                              if name.startswith("test_")]):
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "reliability.md").write_text(render(REPORTS))


@pytest.fixture
def deployment_parts(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    namespace = f"cbfault-{uuid.uuid4().hex[:8]}"
    with postgres_database() as database_url:
        yield tmp_path, database_url, namespace
    delete_broker_namespace(namespace)


def assert_exactly_once(report: FaultReport) -> None:
    REPORTS.append(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{len(REPORTS):02d}.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))
    assert report.lost == 0, report
    assert report.duplicates == 0, report
    assert report.delivered == report.events, report
    assert report.incomplete_timelines == 0, report


def run_under_faults(deployment_parts: tuple[Path, str, str], receiver: WebhookReceiver, *, description: str,
                     prefix: str, cases: int, every: tuple[float, float], times: int,
                     inject: Callable[[Deployment, int], None], settle_seconds: float = 600) -> None:
    """Publish ``cases`` cases to two workers while ``inject`` breaks something ``times`` times, then count."""
    folder, database_url, namespace = deployment_parts
    deployment = Deployment(folder, receiver, database_url, namespace, workers=2)
    envelopes = [case_created(f"{prefix}-{n:05d}") for n in range(cases)]
    report = FaultReport(description, cases=cases)
    started = time.monotonic()
    try:
        publisher = deployment.publish_in_background(envelopes)

        def injected(n: int) -> None:
            inject(deployment, n)
            report.failures_injected += 1

        injector = chaos(every, times, injected)
        publisher.join(600)
        injector.join(120)
        deployment.wait_until(lambda: deployment.states() == {"delivered": cases}, settle_seconds, "every delivery")
        report.seconds = time.monotonic() - started
    finally:
        deployment.stop()
    assert_exactly_once(deployment.check(report, envelopes))


def test_workers_killed_at_random_points(deployment_parts: tuple[Path, str, str],
                                         receiver: WebhookReceiver) -> None:
    def kill(deployment: Deployment, _n: int) -> None:
        deployment.kill_and_restart(random.randrange(len(deployment.workers)))

    run_under_faults(deployment_parts, receiver, description="worker processes killed with SIGKILL at random points",
                     prefix="KILL", cases=KILL_CASES, every=(2.0, 5.0), times=5, settle_seconds=900, inject=kill)


def test_workers_stopped_with_sigterm_mid_flow(deployment_parts: tuple[Path, str, str],
                                              receiver: WebhookReceiver) -> None:
    exit_codes: list[int] = []
    run_under_faults(
        deployment_parts, receiver,
        description="worker processes stopped with SIGTERM mid-flow (graceful shutdown), then restarted",
        prefix="TERM", cases=2000, every=(1.0, 3.0), times=3,
        inject=lambda deployment, n: exit_codes.append(deployment.terminate_and_restart(n % len(deployment.workers))),
    )
    assert exit_codes == [0, 0, 0]  # each finished or returned its in-flight work and exited cleanly


@pytest.mark.skipif(bool(os.environ.get("CASEBRIDGE_TEST_AMQP_URL")),
                    reason="rabbitmqctl controls the local server, not the one CASEBRIDGE_TEST_AMQP_URL names")
def test_rabbitmq_connections_cut_mid_run(deployment_parts: tuple[Path, str, str],
                                          receiver: WebhookReceiver) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "rabbitmqctl is missing; scripts/test.sh installs it with RabbitMQ's server package"

    def cut(_deployment: Deployment, n: int) -> None:
        subprocess.run([rabbitmqctl, "close_all_connections", f"fault injection {n}"], check=True,
                       capture_output=True, timeout=60)

    run_under_faults(deployment_parts, receiver,
                     description="every RabbitMQ connection force-closed (rabbitmqctl close_all_connections)",
                     prefix="NET", cases=3000, every=(1.5, 4.0), times=3, inject=cut)


def test_target_down_for_a_while_then_back(deployment_parts: tuple[Path, str, str],
                                           receiver: WebhookReceiver) -> None:
    folder, database_url, namespace = deployment_parts
    deployment = Deployment(folder, receiver, database_url, namespace, workers=2)
    creates = [case_created(f"DOWN-{n:04d}") for n in range(500)]
    updates = [status_changed(f"DOWN-{n:04d}", "in_progress") for n in range(500)]
    report = FaultReport("target answering 503 to everything for 8 s, then back", cases=500,
                         failures_injected=1)
    started = time.monotonic()
    try:
        receiver.outage(8)
        deployment.publish(creates + updates)
        deployment.wait_until(lambda: deployment.states() == {"delivered": 1000}, 600, "every delivery")
        report.seconds = time.monotonic() - started
    finally:
        deployment.stop()
    deployment.check(report, creates + updates)
    report.notes.append("each case: case.created then case.status_changed")
    order = {}
    for item in receiver.on("/highways"):
        if item.headers.get("x-test-answered", "").startswith("2"):
            order.setdefault(item.body["event"]["case"]["case_id"], []).append(item.body["event"]["event_type"])
    out_of_order = [case for case, types in order.items() if types != ["case.created", "case.status_changed"]]
    report.notes.append(f"{len(out_of_order)} case(s) with events out of order")
    assert out_of_order == []
    assert_exactly_once(report)


def test_slow_target_that_takes_the_case_after_the_timeout(deployment_parts: tuple[Path, str, str],
                                                           receiver: WebhookReceiver) -> None:
    folder, database_url, namespace = deployment_parts
    deployment = Deployment(folder, receiver, database_url, namespace, workers=2, timeout_seconds=1)
    envelopes = [case_created(f"SLOW-{n:04d}") for n in range(300)]
    slow = 8
    report = FaultReport("target slower than the timeout (it still records the case), then fast", cases=300,
                         failures_injected=slow)
    receiver.answer("/highways", *[Answer(201, delay=1.5)] * slow)
    started = time.monotonic()
    try:
        deployment.publish(envelopes)
        deployment.wait_until(lambda: deployment.states() == {"delivered": 300}, 600, "every delivery")
        report.seconds = time.monotonic() - started
    finally:
        deployment.stop()
    report.notes.append(f"{receiver.lookups} lookup(s) before re-sending")
    assert receiver.lookups >= slow
    assert_exactly_once(deployment.check(report, envelopes))


def test_target_slower_than_the_timeout_for_a_whole_minute(deployment_parts: tuple[Path, str, str],
                                                          receiver: WebhookReceiver) -> None:
    folder, database_url, namespace = deployment_parts
    deployment = Deployment(folder, receiver, database_url, namespace, workers=2, timeout_seconds=1)
    envelopes = [case_created(f"MINUTE-{n:04d}") for n in range(600)]
    report = FaultReport("target slower than the timeout for a whole minute (it records each case, then answers "
                         "after 1.5 s; the timeout is 1 s)", cases=600, failures_injected=1)
    started = time.monotonic()
    try:
        receiver.slow(60, 1.5)
        publisher = deployment.publish_in_background(envelopes, at=[n * 0.1 for n in range(len(envelopes))])
        publisher.join(120)
        deployment.wait_until(lambda: deployment.states() == {"delivered": 600}, 600, "every delivery")
        report.seconds = time.monotonic() - started
    finally:
        deployment.stop()
    report.notes.append(f"{receiver.lookups} lookup(s) before re-sending; {len(receiver.on('/highways'))} POSTs "
                        "for 600 cases")
    assert_exactly_once(deployment.check(report, envelopes))
    assert len(receiver.on("/highways")) == 600, "a create that may have landed is looked up, never sent again"


def test_mixed_http_and_amqp_with_follow_ups_under_kills_outage_and_slowness_at_once(
        deployment_parts: tuple[Path, str, str], receiver: WebhookReceiver) -> None:
    """Half the cases over HTTP and half over AMQP, each followed by three events 0.05-0.5 s apart, with two
    workers killed now and then, the target down for 10 s and slower than the timeout for 10 s, all at once."""
    folder, database_url, namespace = deployment_parts
    deployment = Deployment(folder, receiver, database_url, namespace, workers=2, timeout_seconds=1, api=True)
    per_channel = 300
    cases = {channel: [_case_events(f"MIX-{channel.upper()}-{n:04d}") for n in range(per_channel)]
             for channel in ("http", "amqp")}
    every = [event for channel in cases.values() for case in channel for event in case]
    report = FaultReport("cases over HTTP and AMQP with follow-ups, under SIGKILLs, a 10 s outage and 10 s of a "
                         "target slower than the timeout, at once", cases=2 * per_channel)
    faults = [(4.0, lambda: deployment.kill_and_restart(0)), (8.0, lambda: receiver.outage(10)),
              (14.0, lambda: deployment.kill_and_restart(1)), (22.0, lambda: receiver.slow(10, 1.5)),
              (26.0, lambda: deployment.kill_and_restart(0)), (34.0, lambda: deployment.kill_and_restart(1))]
    started = time.monotonic()
    try:
        amqp = deployment.publish_in_background(*_schedule(cases["amqp"], spacing=0.12))
        http = threading.Thread(target=_send_over_http, args=(deployment, cases["http"]), daemon=True)
        http.start()
        for at, fault in faults:
            time.sleep(max(0.0, started + at - time.monotonic()))
            fault()
            report.failures_injected += 1
        amqp.join(300)
        http.join(300)
        assert not amqp.is_alive() and not http.is_alive(), "the senders did not finish"
        deployment.wait_until(lambda: deployment.states() == {"delivered": len(every)}, 600, "every delivery")
        report.seconds = time.monotonic() - started
    finally:
        deployment.stop()
    arrived: dict[str, list[str]] = {}
    for item in receiver.on("/highways"):
        if item.headers.get("x-test-answered", "").startswith("2"):
            arrived.setdefault(item.body["event"]["case"]["case_id"], []).append(item.body["event"]["event_id"])
    sent = {case[0]["case"]["case_id"]: [event["event_id"] for event in case]
            for channel in cases.values() for case in channel}
    out_of_order = [case_id for case_id, events in sent.items() if arrived.get(case_id) != events]
    report.notes.append(f"{len(every)} events, 4 per case; {len(out_of_order)} case(s) reached the target out of "
                        f"the order they were sent; {receiver.lookups} lookup(s)")
    assert out_of_order == [], out_of_order[:10]
    assert_exactly_once(deployment.check(report, every))


def _case_events(case_id: str) -> list[dict[str, Any]]:
    return [case_created(case_id), status_changed(case_id, "in_progress"), note_added(case_id, "Crew on site"),
            status_changed(case_id, "action_scheduled")]


def _schedule(cases: list[list[dict[str, Any]]], *, spacing: float) -> tuple[list[dict[str, Any]], list[float]]:
    """Every case's events at their send times (a case every ``spacing`` s, its follow-ups 0.05-0.5 s apart),
    in time order."""
    timed = []
    for number, events in enumerate(cases):
        at = number * spacing
        for event in events:
            timed.append((at, event))
            at += random.uniform(0.05, 0.5)
    timed.sort(key=lambda item: item[0])
    return [event for _, event in timed], [at for at, _ in timed]


def _send_over_http(deployment: Deployment, cases: list[list[dict[str, Any]]]) -> None:
    """Sixteen CRM clients, each sending its share of cases event by event, each after the last one's 202."""
    def send(share: list[list[dict[str, Any]]]) -> None:
        with httpx.Client(timeout=30) as client:
            for events in share:
                for event in events:
                    deployment.post(client, event)
                    time.sleep(random.uniform(0.05, 0.5))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(send, [cases[start::16] for start in range(16)]))


def render(reports: list[FaultReport]) -> str:
    lines = [
        "# Reliability",
        "",
        "Measured by `tests/integration/test_fault_injection.py` each time it runs (`./scripts/test.sh -m soak -k",
        "fault_injection`; `CASEBRIDGE_FAULT_CASES=50000` for a longer soak), which writes this page to",
        "`build/reliability/`; `scripts/copy-reliability-figures.sh` copies it here. Every scenario runs",
        "`broker worker` processes on RabbitMQ and PostgreSQL, with a CRM publishing over AMQP (pika), and then",
        "compares what the target",
        "received with what was sent: **duplicates** are events the target accepted more than once, **lost**",
        "are events it never accepted, and a timeline is complete when the event's audit trail has exactly one",
        "`received`, `validated`, `routed` and `delivered` step.",
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU cores.",
        "",
        "| scenario | cases | events | delivered | duplicates | lost | failures injected | incomplete timelines "
        "| seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for report in reports:
        lines.append(
            f"| {report.scenario} | {report.cases:,} | {report.events:,} | {report.delivered:,} | "
            f"{report.duplicates} | {report.lost} | {report.failures_injected} | {report.incomplete_timelines} | "
            f"{report.seconds:.0f} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {report.scenario}: {'; '.join(report.notes)}." for report in reports]
    lines += [
        "",
        "How each promise is kept:",
        "",
        "- **Killed workers.** A message is acknowledged only after its outcome is committed, so RabbitMQ hands",
        "  a killed worker's messages to another. Intake deduplicates by `event_id`. A delivery is claimed",
        "  (`in_flight`, in the worker's name) before the target is called; another worker that receives it",
        "  again takes it over once the first one's heartbeat has gone stale, and first asks the target whether",
        "  the earlier call took effect (query-before-create), recording that instead of sending twice.",
        "- **Connections cut.** Consumers and the outbox relay reconnect with backoff; the CRM's unconfirmed",
        "  publishes are resent and deduplicated; outbox rows are deleted only after RabbitMQ confirms them. A",
        "  worker cut off in the middle of a call to the target keeps its claim while its heartbeat goes on: the",
        "  worker RabbitMQ hands the message to holds it back until the outcome is recorded",
        "  (`tests/integration/test_worker_liveness.py`).",
        "- **Target down.** Quick in-process retries, then redelivery through the queue with the target's",
        "  backoff; a later event of a case waits (`waiting`) until the earlier one is delivered.",
        "- **Slow target.** A timeout may mean the target took the case. The attempt was counted when it",
        "  started and the delivery marked as possibly landed; it is not repeated in-process, and every later",
        "  attempt (after a retry, a take-over, an open circuit, a replay) asks the target first. A target that",
        "  cannot be asked by our reference holds the delivery as `unconfirmed` for reconciliation instead.",
        "- **Order.** The intake queue has a single active consumer, so the workers never race each other for a",
        "  case's events; a follow-up that arrives before its case is held back and taken in right behind it; a",
        "  later event of a case waits for the earlier one at each target.",
        "",
    ]
    return "\n".join(lines)
