"""Cases to Confirm and status changes back, end to end through the broker (RabbitMQ and the in-process
transport, PostgreSQL and SQLite), against the Confirm simulator in both profiles."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from support.envelopes import case_created, status_changed
from support.harness import RunningBroker
from support.receiver import WebhookReceiver
from support.soap_targets import CONFIRM, PROFILE_PARAMS, failure_of, poll

from adapters.confirm.simulator import ConfirmSimulator
from broker.store.tables import CaseRecord, FailedMessage

HIGHWAYS = {"name": "highways to Confirm", "services": ["highways.*"]}


@pytest.fixture(params=PROFILE_PARAMS)
def simulator(request: pytest.FixtureRequest) -> Iterator[ConfirmSimulator]:
    yield from CONFIRM.simulated(profile=request.param)


@pytest.fixture
def mappings_dir(tmp_path: Path, receiver: WebhookReceiver, simulator: ConfirmSimulator,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    mapping = CONFIRM.mapping()
    del mapping["services"]["highways.blocked_drain"]  # a service this council has not mapped to Confirm yet
    return CONFIRM.broker_mappings(tmp_path / "mappings", monkeypatch, url=simulator.url, crm_url=receiver.url,
                                   route=HIGHWAYS, mapping=mapping, publish_notes=True)


def test_a_case_becomes_an_enquiry_and_its_progress_comes_back(running: RunningBroker, simulator: ConfirmSimulator,
                                                               receiver: WebhookReceiver) -> None:
    created = case_created("CF-1")
    created["occurred_at"] = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    assert running.post_case(created).status_code == 202
    running.wait_settled()
    case = running.client.get("/v1/cases/CF-1").json()
    number = case["external_refs"]["confirm"]
    assert simulator.enquiries[number].fields["ExternalSystemReference"].startswith("CB-")

    # The CRM moves it on; Confirm gets an EnquiryUpdate.
    later = status_changed("CF-1", "in_progress")
    later["occurred_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()  # Confirm logs whole seconds
    assert running.post_event("CF-1", later).status_code == 202
    running.wait_settled()
    assert simulator.enquiries[number].status == "2000"

    # An officer completes the works in Confirm; the poll turns it into an event for the CRM.
    simulator.officer_sets_status(number, "4000", "Pothole filled", when=datetime.now(UTC) - timedelta(seconds=5))
    # Three entries in the window: the enquiry being logged and our own update are not news; the officer's is.
    assert poll(running)["targets"] == {"confirm": {"changes": 3, "emitted": 1}}
    running.wait_until(lambda: len(receiver.on("/crm")) == 1, what="the status change at the CRM")
    [sent] = receiver.on("/crm")
    event = sent.body["event"]
    assert (event["event_type"], event["source"], event["case"]["case_id"]) == ("case.status_changed", "confirm",
                                                                               "CF-1")
    assert event["change"] == {"status": "fixed", "reason": "Pothole filled", "external_status_code": "4000"}
    assert running.client.get("/v1/cases/CF-1").json()["status"] == "fixed"

    poll(running)  # the overlap reads the same change again: nothing new is sent
    running.wait_settled()
    assert len(receiver.on("/crm")) == 1
    steps = [(e["step"], e["actor"]) for e in running.client.get("/v1/cases/CF-1/history").json()["entries"]]
    assert ("received", "target:confirm") in steps


def test_an_unmapped_service_fails_with_a_clear_reason(running: RunningBroker, simulator: ConfirmSimulator) -> None:
    failed = failure_of(running, case_created("CF-2", service_code="highways.blocked_drain"))
    assert (failed.error_class, failed.reason) == ("permanent", "unmapped_service_code")
    assert "highways.blocked_drain" in failed.error_text
    assert simulator.requests == []


def test_wrong_credentials_fail_permanently_saying_so(running: RunningBroker, simulator: ConfirmSimulator,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.credentials = ("casebridge", "rotated-yesterday", "DEMO")
    failed = failure_of(running, case_created("CF-3"))
    assert (failed.error_class, failed.reason) == ("permanent", "confirm_authentication")
    assert "credentials" in failed.error_text


def test_confirm_slow_then_succeeding_creates_one_enquiry(running: RunningBroker,
                                                          simulator: ConfirmSimulator) -> None:
    simulator.slow_next(2.0)  # creates the enquiry, answers after our 1 s timeout
    running.post_case(case_created("CF-4", reporter={"kind": "anonymous"}))
    assert running.wait_settled(timeout=60) == {"delivered": 1}
    assert len(simulator.enquiries) == 1
    number = running.client.get("/v1/cases/CF-4").json()["external_refs"]["confirm"]
    assert number == next(iter(simulator.enquiries))
    assert simulator.enquiries[number].customer == {}  # anonymous: no customer is sent


def test_a_long_downtime_is_caught_up_in_windows(running: RunningBroker, simulator: ConfirmSimulator,
                                                 receiver: WebhookReceiver) -> None:
    running.post_case(case_created("CF-5"))
    running.wait_settled()
    number = running.client.get("/v1/cases/CF-5").json()["external_refs"]["confirm"]
    poll(running)
    from broker.store.tables import PollMark

    with running.broker.store.transaction() as session:  # as if the scheduler had been down for two days
        mark = session.get_one(PollMark, "confirm")
        mark.polled_until = mark.polled_until - timedelta(days=2)
        down_since = mark.polled_until
    from zoneinfo import ZoneInfo

    simulator.officer_sets_status(number, "3000", "Works ordered",
                                  when=(down_since + timedelta(hours=20)).astimezone(ZoneInfo("Europe/London")))
    simulator.requests.clear()
    poll(running)
    windows = [ops for ops in simulator.requests if ops == ["GetEnquiryStatusChanges"]]
    assert len(windows) >= 8  # two days in windows of at most six hours
    running.wait_until(lambda: len(receiver.on("/crm")) == 1, what="the caught-up change")
    assert receiver.on("/crm")[0].body["event"]["change"]["status"] == "action_scheduled"


def test_a_representatives_report_located_by_gps_only(running: RunningBroker, simulator: ConfirmSimulator) -> None:
    reporter = {"kind": "representative", "role": "councillor",
                "representative": {"name": "Cllr Jane Smith", "email": "cllr.smith@example.gov.uk"},
                "on_behalf_of": {"name": "Alan Resident", "phone": "01632 960000"}}
    running.post_case(case_created("CF-6", reporter=reporter, location={"lat": 51.507748, "lon": -0.127969}))
    assert running.wait_settled() == {"delivered": 1}
    number = running.client.get("/v1/cases/CF-6").json()["external_refs"]["confirm"]
    enquiry = simulator.enquiries[number]
    assert enquiry.fields["ContactName"] == "Cllr Jane Smith"
    assert (enquiry.customer["CustomerForename"], enquiry.customer["CustomerSurname"]) == ("Alan", "Resident")
    assert abs(float(enquiry.fields["EnquiryX"]) - 530000) < 150
    assert abs(float(enquiry.fields["EnquiryY"]) - 180400) < 150


def test_a_hostile_answer_is_refused_and_recorded(running: RunningBroker, simulator: ConfirmSimulator) -> None:
    simulator.hostile_next()
    failed = failure_of(running, case_created("CF-7"))
    assert (failed.error_class, failed.reason) == ("permanent", "unsafe_xml")


def test_a_long_description_is_cut_for_confirm_and_kept_whole_here(running: RunningBroker,
                                                                   simulator: ConfirmSimulator) -> None:
    description = "".join(f"{n:04d}|" for n in range(500))  # 2500 characters, each position recognisable
    running.post_case(case_created("CF-8", description=description))
    assert running.wait_settled() == {"delivered": 1}
    number = running.client.get("/v1/cases/CF-8").json()["external_refs"]["confirm"]
    assert simulator.enquiries[number].fields["EnquiryDescription"] == description[:2000]
    entries = running.client.get("/v1/cases/CF-8/history").json()["entries"]
    [delivered] = [entry for entry in entries if entry["step"] == "delivered"]
    assert delivered["detail"]["description_truncated_from"] == 2500
    # GET /v1/cases/{case_id} does not show the description: the whole text is in the case as stored.
    with running.broker.store.read() as session:
        case = session.scalars(select(CaseRecord).where(CaseRecord.case_id == "CF-8")).one()
    assert case.snapshot["description"] == description


def test_a_create_confirm_cannot_confirm_is_held_reconciled_then_created_once_on_a_support_officers_word(
        running: RunningBroker, simulator: ConfirmSimulator) -> None:
    """The connection drops before Confirm answers (it may or may not have taken the enquiry); Confirm cannot be
    asked by our reference, and a search does not find it: nothing is sent again until someone decides."""
    from broker.delivery.reconciliation import REASON, reconcile_unconfirmed
    from broker.failures.actions import replay

    simulator.drop_next()
    running.post_case(case_created("CF-UNSURE", reporter={"kind": "anonymous"}))
    running.wait_until(lambda: running.delivery_states() == {"unconfirmed": 1}, timeout=60,
                       what="the create to wait as unconfirmed")
    assert simulator.enquiries == {}
    broker = running.broker
    assert reconcile_unconfirmed(broker.store, broker.configuration)["confirm"] == {
        "found": 0, "to_support_staff": 0, "still_waiting": 1}
    assert reconcile_unconfirmed(broker.store, broker.configuration,
                                 settle=timedelta(0))["confirm"]["to_support_staff"] == 1
    with broker.store.read() as session:
        failed = session.scalars(select(FailedMessage)).one()
    assert (failed.reason, failed.error_class) == (REASON, "unconfirmed")
    assert simulator.enquiries == {}, "reconciliation never creates"
    replay(broker.store, broker.intake, failed.id, actor="user:sam", create_anyway=True)
    broker.wake_relay()
    assert running.wait_settled(timeout=60) == {"delivered": 1}
    assert len(simulator.enquiries) == 1
