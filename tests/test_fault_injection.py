"""Break things for real and count: worker processes killed, RabbitMQ connections cut, the target down or slow.

Each scenario runs `broker worker` processes against the real RabbitMQ and PostgreSQL with a CRM publishing over
AMQP (pika). Afterwards the target's own counts and the store must agree: every case delivered exactly once,
nothing lost, every timeline complete. The figures are written to docs/reliability.md at the end of the module.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.deployment import Deployment, FaultReport, chaos
from support.envelopes import case_created, status_changed
from support.harness import REPO
from support.receiver import Answer, WebhookReceiver
from support.services import delete_broker_namespace, postgres_database

pytestmark = pytest.mark.slow

#: Cases for the process-kill scenario (the figure in docs/reliability.md); override to run a longer soak.
KILL_CASES = int(os.environ.get("CASEBRIDGE_FAULT_CASES", "10000"))
REPORTS: list[FaultReport] = []


@pytest.fixture(scope="module", autouse=True)
def write_reliability_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Rewrite docs/reliability.md once every scenario in this module ran and reported: never a partial page."""
    scenarios = [item for item in request.session.items if item.module is request.module]
    yield
    if REPORTS and len(REPORTS) == len(scenarios) == len([name for name in dir(request.module)
                                                              if name.startswith("test_")]):
        (REPO / "docs" / "reliability.md").write_text(render(REPORTS))


@pytest.fixture
def deployment_parts(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    namespace = f"cbfault-{uuid.uuid4().hex[:8]}"
    with postgres_database() as database_url:
        yield tmp_path, database_url, namespace
    delete_broker_namespace(namespace)


def assert_exactly_once(report: FaultReport) -> None:
    REPORTS.append(report)
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


def render(reports: list[FaultReport]) -> str:
    lines = [
        "# Reliability",
        "",
        "Written by `tests/test_fault_injection.py` each time it runs (`./scripts/test.sh -k fault_injection`;",
        "`CASEBRIDGE_FAULT_CASES=50000` for a longer soak). Every scenario runs `broker worker` processes on",
        "RabbitMQ and PostgreSQL, with a CRM publishing over AMQP (pika), and then compares what the target",
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
        "  (`tests/test_worker_liveness.py`).",
        "- **Target down.** Quick in-process retries, then redelivery through the queue with the target's",
        "  backoff; a later event of a case waits (`waiting`) until the earlier one is delivered.",
        "- **Slow target.** A timeout may mean the target took the case: every retry asks it first.",
        "",
    ]
    return "\n".join(lines)
