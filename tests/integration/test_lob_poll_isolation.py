"""The status poll reads each LOB system on its own: one that is down is recorded against it, and the others' changes
still come back. Against the Confirm and Uniform simulators, Confirm behind a link that can be cut."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import CapturingLogger
from support.envelopes import case_created
from support.harness import REPO, RunningBroker
from support.processes import broker_env, run_broker
from support.proxy import CuttableProxy
from support.receiver import WebhookReceiver
from support.soap_targets import CONFIRM, UNIFORM

import broker.feedback.polling as lob_updates
from adapters.confirm.simulator import ConfirmSimulator
from adapters.uniform.simulator import UniformSimulator
from broker.scheduling.context import JobContext
from broker.scheduling.scheduler import Scheduler
from broker.scheduling.schedules import Schedule
from broker.store.schedule_runs import last_runs
from broker.store.tables import PollMark

pytestmark = pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)

#: Overlap 0: a change the poll missed while a target was down is found only if its mark stayed where it was.
POLL = Schedule(name="poll-lob-status-changes", cron="*/5 * * * *", job="lob.poll_status_changes",
                options={"overlap_minutes": 0, "first_look_back_minutes": 5, "max_window_hours": 6})


@pytest.fixture
def confirm() -> Iterator[ConfirmSimulator]:
    yield from CONFIRM.simulated()


@pytest.fixture
def uniform() -> Iterator[UniformSimulator]:
    yield from UNIFORM.simulated()


@pytest.fixture
def confirm_link(confirm: ConfirmSimulator) -> Iterator[CuttableProxy]:
    """The network between the broker and Confirm: cut, Confirm's port refuses connections."""
    port = int(confirm.url.split(":")[2].split("/")[0])
    link = CuttableProxy(("127.0.0.1", port))
    yield link
    link.cut()


@pytest.fixture
def mappings_dir(tmp_path: Path, receiver: WebhookReceiver, confirm_link: CuttableProxy, uniform: UniformSimulator,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """Highways cases to Confirm (through the link), noise complaints to Uniform, their progress to the CRM."""
    directory = tmp_path / "mappings"
    directory.mkdir()
    for name in ("services.yaml", "confirm.yaml", "uniform.yaml"):
        shutil.copy(REPO / "mappings" / name, directory)
    targets: dict[str, Any] = {}
    for soap, url in ((CONFIRM, f"http://127.0.0.1:{confirm_link.port}{ConfirmSimulator.path}"),
                      (UNIFORM, uniform.url)):
        monkeypatch.setenv(soap.password_env, "secret")
        targets[soap.name] = {
            "adapter": soap.name, "system": soap.name,
            "settings": {"url": url, "username": "casebridge", "password_env": soap.password_env,
                         "database_id": "DEMO", "timeout_seconds": 1, "lookup_timeout_seconds": 5},
            "retry": {"delays_seconds": [0.3], "jitter": 0},
        }
    targets["crm"] = {"adapter": "webhook", "system": "crm", "settings": {"url": f"{receiver.url}/crm"}}
    routes = [
        {"name": "highways to Confirm", "services": ["highways.*"], "deliver": [{"target": "confirm"}]},
        {"name": "noise to Uniform", "services": ["environment.noise"], "events": ["case.created"],
         "deliver": [{"target": "uniform"}]},
        {"name": "progress to the CRM", "services": ["*"], "events": ["case.status_changed", "case.closed"],
         "deliver": [{"target": "crm"}]},
    ]
    (directory / "routes.yaml").write_text(yaml.safe_dump({"targets": targets, "routes": routes}, sort_keys=False))
    return directory


def changes_at_crm(receiver: WebhookReceiver) -> list[tuple[str, str, str]]:
    return sorted((sent.body["event"]["source"], sent.body["event"]["case"]["case_id"],
                   sent.body["event"]["change"]["status"])
                  for sent in receiver.on("/crm") if sent.body["event"]["event_type"] == "case.status_changed")


def mark_of(running: RunningBroker, target: str) -> Any:
    with running.broker.store.read() as session:
        mark = session.get(PollMark, target)
        return mark.polled_until if mark else None


def test_one_system_down_never_stops_the_others_and_nothing_is_skipped_when_it_is_back(
    running: RunningBroker, confirm: ConfirmSimulator, uniform: UniformSimulator, confirm_link: CuttableProxy,
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    running.post_case(case_created("HW-1"))
    running.post_case(case_created("EH-1", service_code="environment.noise", description="Barking dog all night"))
    assert running.wait_settled() == {"delivered": 2}
    enquiry = running.client.get("/v1/cases/HW-1").json()["external_refs"]["confirm"]
    request = running.client.get("/v1/cases/EH-1").json()["external_refs"]["uniform"]
    broker = running.broker
    scheduler = Scheduler(JobContext(broker.store, broker.configuration, broker.intake), [POLL],
                          stop=threading.Event(), after_run=broker.wake_relay)
    scheduler.run_now(POLL)  # both answer: each target has its mark
    assert last_runs(broker.store)[POLL.name].outcome == "succeeded"
    confirm_mark = mark_of(running, "confirm")
    assert confirm_mark is not None and mark_of(running, "uniform") is not None

    # Confirm goes off the network; meanwhile officers move both cases on.
    confirm_link.cut()
    time.sleep(1.1)  # Confirm logs whole seconds: the change falls after the mark
    confirm.officer_sets_status(enquiry, "4000", "Pothole filled")
    uniform.officer_sets_status(request, "4_INV")
    logged = CapturingLogger()
    monkeypatch.setattr(lob_updates, "log", logged)

    result = scheduler.run_now(POLL)

    summary = result["targets"]
    assert isinstance(summary, dict)
    assert summary["uniform"] == {"changes": 1, "emitted": 1}
    assert "connection" in summary["confirm"]["error"].lower()
    assert summary["confirm"]["polled_until"] == confirm_mark.isoformat()
    running.wait_until(lambda: changes_at_crm(receiver) == [("uniform", "EH-1", "investigating")],
                       what="Uniform's change at the CRM while Confirm is down")
    assert mark_of(running, "confirm") == confirm_mark  # nothing read, so nothing passed over
    run = last_runs(broker.store)[POLL.name]
    assert run.outcome == "failed"  # after every target was tried
    assert "confirm" in run.summary["error"] and "uniform" not in run.summary["error"]
    assert run.summary["targets"]["uniform"] == {"changes": 1, "emitted": 1}
    [warning] = [call for call in logged.calls if call.method_name == "warning"]
    assert warning.args == ("lob.poll_failed",) and warning.kwargs["target"] == "confirm"
    assert "connection" in warning.kwargs["error"].lower()

    schedules = Path(running.settings.schedules_dir)
    (schedules / "poll.yaml").write_text(yaml.safe_dump(POLL.model_dump()))
    env = broker_env(database_url=running.settings.database_url, mappings_dir=str(running.settings.mappings_dir),
                     schedules_dir=str(schedules))
    listed = run_broker("batch", "list", env={**env, "COLUMNS": "250"}, cwd=schedules)
    assert listed.returncode == 0, listed.stderr
    assert "failed: could not poll confirm" in " ".join(listed.stdout.split()), listed.stdout
    by_hand = run_broker("batch", "run", POLL.name, cwd=schedules, env={
        **env, "COLUMNS": "250", CONFIRM.password_env: "secret", UNIFORM.password_env: "secret"})
    assert by_hand.returncode == 1  # run by hand, the same: every target tried, then failed, and recorded
    assert "could not poll confirm" in by_hand.stderr and "Traceback" not in by_hand.stderr
    assert any(line.split()[1:2] == ["uniform"] for line in by_hand.stdout.splitlines()), by_hand.stdout
    assert last_runs(broker.store)[POLL.name].id > run.id
    assert last_runs(broker.store)[POLL.name].outcome == "failed"
    assert mark_of(running, "confirm") == confirm_mark

    # Confirm is back: the change made while it was away comes through, once; Uniform's is not sent again.
    confirm_link.restore()
    result = scheduler.run_now(POLL)

    polled = result["targets"]
    assert isinstance(polled, dict)
    # Read: the officer's change, and the enquiry's first status-log entry (made by our create, so not reported back)
    # when it was logged in the same whole second as the first poll's mark (Confirm logs whole seconds, and a window
    # starts at its mark's second).
    assert polled["confirm"]["emitted"] == 1 and polled["confirm"]["changes"] in (1, 2), polled["confirm"]
    assert polled["uniform"]["emitted"] == 0
    assert last_runs(broker.store)[POLL.name].outcome == "succeeded"
    running.wait_until(lambda: len(changes_at_crm(receiver)) == 2, what="Confirm's change at the CRM")
    assert changes_at_crm(receiver) == [("confirm", "HW-1", "fixed"), ("uniform", "EH-1", "investigating")]
    assert mark_of(running, "confirm") > confirm_mark
