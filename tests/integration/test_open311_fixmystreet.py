"""FixMyStreet pointed at ``broker run`` with the shipped mappings, Confirm and Uniform simulated, on SQLite with
the in-process transport and on PostgreSQL with RabbitMQ: a highways report becomes a Confirm enquiry (sent twice,
its first answer lost, and still one enquiry); the officer's status changes reach FixMyStreet's polls with
Confirm's own code; the resident's comment reaches Confirm as an enquiry update and is not handed back; the same
for an environmental health report in Uniform, whose changes come back with Uniform's codes. Each step is in the
case's history, for ``broker case history`` and the console alike."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from support.fixmystreet import FixMyStreet, Report, answers_lost
from support.harness import REPO, free_port
from support.processes import BrokerProcess, broker_env, run_broker
from support.receiver import WebhookReceiver
from support.services import AMQP_URL, delete_broker_namespace, postgres_database

from adapters.confirm.simulator import ConfirmSimulator
from adapters.uniform.simulator import UniformSimulator

pytestmark = pytest.mark.slow

POLL = """\
name: poll-lob-status-changes
cron: "0 3 1 1 *"          # run by hand in this test (broker batch run), never by the clock
timezone: Europe/London
job: lob.poll_status_changes
options:
  overlap_minutes: 10
  first_look_back_minutes: 60
  max_window_hours: 6
"""
PASSWORD = "correct horse battery"


@dataclass
class Deployment:
    folder: Path
    env: dict[str, str]
    process: BrokerProcess
    url: str
    key: str
    confirm: ConfirmSimulator
    uniform: UniformSimulator

    def fixmystreet(self) -> FixMyStreet:
        return FixMyStreet(f"{self.url}/open311/v2/", self.key, timeout=60)

    def poll_lob_systems(self) -> None:
        """What the scheduler does every five minutes, now."""
        result = run_broker("batch", "run", "poll-lob-status-changes", env=self.env, cwd=self.folder, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    def history(self, case_id: str) -> list[dict[str, object]]:
        result = run_broker("case", "history", case_id, "--json", env=self.env, cwd=self.folder)
        assert result.returncode == 0, result.stderr
        entries: list[dict[str, object]] = json.loads(result.stdout)["entries"]
        return entries


@pytest.fixture(params=["sqlite-memory", "postgresql-rabbitmq"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path, receiver: WebhookReceiver) -> Iterator[Deployment]:
    confirm, uniform = ConfirmSimulator(), UniformSimulator()
    mappings, schedules = tmp_path / "mappings", tmp_path / "schedules"
    shutil.copytree(REPO / "mappings", mappings)
    schedules.mkdir()
    (schedules / "poll-lob-status-changes.yaml").write_text(POLL)
    port = free_port()
    namespace = f"cbo311-{uuid.uuid4().hex[:8]}"
    with (postgres_database() if request.param.startswith("postgresql") else _no_database()) as database_url:
        env = broker_env(
            database_url=database_url or f"sqlite:///{tmp_path / 'casebridge.db'}",
            amqp_url=AMQP_URL if request.param.endswith("rabbitmq") else "memory://", amqp_namespace=namespace,
            mappings_dir=str(mappings), schedules_dir=str(schedules), http_port=str(port), outbox_poll_seconds="0.2",
            confirm_url=confirm.url, confirm_password="secret", uniform_url=uniform.url, uniform_password="secret",
            crm_webhook_url=f"{receiver.url}/crm", crm_webhook_secret="s3cret",
            environment_webhook_url=f"{receiver.url}/environment", environment_webhook_secret="s3cret",
            waste_webhook_url=f"{receiver.url}/waste", new_user_password=PASSWORD,
        )
        assert run_broker("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
        key = run_broker("keys", "create", "fixmystreet", env=env, cwd=tmp_path).stdout.strip().splitlines()[-1]
        assert run_broker("users", "create", "sam", "--role", "viewer", env=env, cwd=tmp_path).returncode == 0
        process = BrokerProcess("run", env=env, cwd=tmp_path, name="run")
        url = f"http://127.0.0.1:{port}"
        try:
            process.wait_for_http(f"{url}/health", timeout=60)
            yield Deployment(tmp_path, env, process, url, key, confirm, uniform)
        finally:
            exit_code = process.terminate()
            confirm.close()
            uniform.close()
            if request.param.endswith("rabbitmq"):
                delete_broker_namespace(namespace)
        assert exit_code == 0, process.output()[-3000:]


class _no_database:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def wait_until(condition: object, what: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_fixmystreet_reports_follows_and_comments_through_confirm(deployment: Deployment) -> None:
    fms = deployment.fixmystreet()
    confirm = deployment.confirm
    assert "highways.pothole" in [service["service_code"] for service in fms.service_list()]
    report = Report(id=7001, service_code="highways.pothole", title="Pothole by the bus stop",
                    detail="A hand deep; cyclists swerve into the road", extra={"hazard": "cyclists",
                                                                                  "depth_mm": "90"})
    with answers_lost(deployment.url) as lossy:
        assert not fms.send(report, endpoint=f"{lossy}/open311/v2/")  # Casebridge committed; FixMyStreet timed out
    assert fms.send(report), report.send_fail_reason  # five minutes later
    wait_until(lambda: len(confirm.enquiries) == 1, "the enquiry in Confirm")
    [(number, enquiry)] = confirm.enquiries.items()
    assert enquiry.fields["ExternalSystemReference"] == report.external_id
    assert enquiry.fields["EnquiryDescription"].startswith("title: Pothole by the bus stop")
    assert (enquiry.fields["ServiceCode"], enquiry.fields["SubjectCode"]) == ("HW", "POT")

    confirm.officer_sets_status(number, "3000", "Repair booked for Tuesday",
                                when=datetime.now(UTC) - timedelta(seconds=5))
    deployment.poll_lob_systems()
    [booked] = fms.poll()
    assert (booked.problem_state, booked.external_status_code, booked.text) == (
        "action scheduled", "3000", "Repair booked for Tuesday")

    comment = fms.post_comment(report, 88001, "Thank you, it is getting worse though")
    assert comment.external_id
    wait_until(lambda: any(entry.notes == "Thank you, it is getting worse though" for entry in
                           confirm.enquiries[number].log), "the resident's comment in Confirm")
    deployment.poll_lob_systems()  # Confirm's log now holds our update: not news, and not handed back
    assert fms.poll() == []

    confirm.officer_sets_status(number, "4000", "Pothole filled")
    deployment.poll_lob_systems()
    [filled] = fms.poll()
    assert (filled.problem_state, filled.external_status_code) == ("fixed - council", "4000")
    assert fms.poll(hours=24) == [] and fms.dropped == []  # the nightly catch-up finds nothing new
    assert len(confirm.enquiries) == 1

    history = deployment.history("7001")
    assert [(entry["step"], entry["actor"], entry["target"]) for entry in history
            if entry["step"] in ("received", "delivered")] == [
        ("received", "system:fixmystreet", None), ("delivered", "target:confirm", "confirm"),   # the report
        ("received", "target:confirm", None), ("delivered", "target:crm", "crm"),              # repair booked
        ("received", "system:fixmystreet", None), ("delivered", "target:confirm", "confirm"),  # the comment
        ("received", "target:confirm", None), ("delivered", "target:crm", "crm"),              # filled
    ]
    assert [entry["detail"]["via"] for entry in history if entry["step"] == "received"] == [  # type: ignore[index]
        "open311", "poll", "open311", "poll"]
    seen_in_console(deployment, report.external_id or "", expect_via=["open311", "poll", "open311", "poll"])
    logged = deployment.process.output()
    assert '"via":"open311"' in logged  # event.accepted, as for every channel
    for personal in ("Ada Lovelace", "ada@example.org", "A hand deep", "getting worse"):
        assert personal not in logged, f"{personal!r} written to the log"


def test_fixmystreet_reports_and_follows_through_uniform(deployment: Deployment) -> None:
    fms = deployment.fixmystreet()
    uniform = deployment.uniform
    report = Report(id=7002, service_code="environment.noise", title="Loud music every night",
                    detail="From the flat above, past midnight", extra={"noise_source": "music",
                                                                         "time_of_day": "After midnight"})
    assert fms.send(report), report.send_fail_reason
    wait_until(lambda: len(uniform.requests) == 1, "the service request in Uniform")
    [(reference, request)] = uniform.requests.items()
    assert report.external_id in (value for _type, value in request.alternative_references)

    uniform.officer_sets_status(reference, "4_INV")
    deployment.poll_lob_systems()
    [investigating] = fms.poll()
    assert (investigating.problem_state, investigating.external_status_code) == ("investigating", "4_INV")

    comment = fms.post_comment(report, 88002, "It happened again last night")
    assert comment.external_id  # recorded; the shipped routes send Uniform new cases only (its adapter takes no
    # updates), so it stays in the case's history, for the officers who read it there

    uniform.officer_sets_status(reference, "8_CLO", "RESFIX")
    deployment.poll_lob_systems()
    deployment.poll_lob_systems()  # read again: the same state is not a second change
    [fixed] = fms.poll()
    assert (fixed.problem_state, fixed.external_status_code) == ("fixed - council", "8_CLO/RESFIX")
    assert fms.poll(hours=24) == []
    history = deployment.history("7002")
    assert [(entry["step"], entry["actor"], entry["target"]) for entry in history
            if entry["step"] in ("received", "delivered")] == [
        ("received", "system:fixmystreet", None), ("delivered", "target:uniform", "uniform"),
        ("received", "target:uniform", None), ("delivered", "target:crm", "crm"),
        ("received", "system:fixmystreet", None),
        ("received", "target:uniform", None), ("delivered", "target:crm", "crm"),
    ]
    assert [entry["detail"]["via"] for entry in history if entry["step"] == "received"] == [  # type: ignore[index]
        "open311", "poll", "open311", "poll"]
    seen_in_console(deployment, report.external_id or "", expect_via=["open311", "poll", "open311", "poll"])


def seen_in_console(deployment: Deployment, reference: str, *, expect_via: list[str]) -> None:
    """A support officer finds the case by the service_request_id FixMyStreet shows, and reads its timeline."""
    with httpx.Client(base_url=deployment.url, timeout=30) as console:
        signed_in = console.post("/v1/console/session", json={"name": "sam", "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        [timeline] = console.get("/v1/console/cases", params={"q": reference}).json()
        assert timeline["source"] == "fixmystreet"
        via = [entry["detail"]["via"] for entry in timeline["entries"] if entry["step"] == "received"]
        assert via == expect_via
        page = console.get(f"/console/cases/{reference.removeprefix('CB-')}")
        assert page.status_code == 200 and "via: open311" in page.text
