"""FixMyStreet pointed at ``/open311/v2/`` with no adapter in between, on both stores and both transports: reports
become cases at their targets, a report sent again after a lost answer gets the same id and creates nothing, status
changes and public notes come back in the five-minute and nightly polls once each, and residents' comments and
reopenings reach the targets, once each.

Every answer is checked against the spec's schemas by the client (:mod:`support.fixmystreet`)."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from support.fixmystreet import FixMyStreet, Report, answers_lost, simple_xml
from support.harness import RunningBroker
from support.receiver import WebhookReceiver

from broker.intake.transaction import Submission
from broker.model.events import CaseNoteAdded, CaseStatusChanged
from broker.store.keys import create_key
from broker.store.tables import AuditEntry, CaseRecord, EventRecord


def fixmystreet(running: RunningBroker, **options: Any) -> FixMyStreet:
    return FixMyStreet(f"{running.base_url}/open311/v2/", create_key(running.broker.store, "fixmystreet"), **options)


def pothole(number: int = 1001, **fields: Any) -> Report:
    return Report(id=number, service_code="highways.pothole", title="Deep pothole",
                  detail="Outside number 12, about a hand deep", extra={"hazard": "cyclists"},
                  photos=["https://fixmystreet.example/photo/1001.0.full.jpeg"], **fields)


def case_pk_of(report: Report) -> str:
    assert report.external_id is not None
    return report.external_id.removeprefix("CB-")


def lob_change(running: RunningBroker, report: Report, status: str, *, reason: str | None = None,
               code: str | None = None, happened: datetime | None = None, source: str = "confirm",
               via: str = "poll") -> str:
    """A status change a LOB system reports (through a poll or a batch file), taken in as the feedback stage does."""
    with running.broker.store.read() as session:
        case = session.get_one(CaseRecord, case_pk_of(report))
    event = CaseStatusChanged.model_validate({
        "event_id": uuid.uuid4(), "occurred_at": happened or datetime.now(UTC), "source": source,
        "case": {"case_id": case.case_id},
        "change": {"status": status, "reason": reason, "external_status_code": code},
    })
    [outcome] = running.broker.intake.accept_many([Submission(event, via, f"target:{source}", case_pk=case.id)])
    assert not isinstance(outcome, Exception), outcome
    running.broker.wake_relay()
    return str(event.event_id)


def test_a_report_becomes_a_case_at_its_target_answered_with_its_id_once_recorded(
        running: RunningBroker, receiver: WebhookReceiver) -> None:
    client = fixmystreet(running)
    report = pothole(phone="020 7946 0000")
    assert client.send(report), report.send_fail_reason
    assert report.external_id and report.external_id.startswith("CB-")
    with running.broker.store.read() as session:  # recorded before it was answered
        assert session.get(CaseRecord, case_pk_of(report)) is not None
    [sent] = receiver.wait_for(1, "/highways")
    event = sent.body["event"]
    assert (event["event_type"], event["source"]) == ("case.created", "fixmystreet")
    case = event["case"]
    assert (case["case_id"], case["service_code"], case["channel"]) == ("1001", "highways.pothole", "web")
    assert case["description"].startswith("title: Deep pothole\n\ndetail: Outside number 12")
    assert case["location"] == {"lat": 51.507748, "lon": -0.127969, "easting": 530000.0, "northing": 180400.0,
                                "description": "10 Downing Street, London"}
    assert case["reporter"] == {"kind": "person", "person": {"name": "Ada Lovelace", "email": "ada@example.org",
                                                             "phone": "020 7946 0000"}}
    assert case["attributes"] == {"fixmystreet_id": "1001", "easting": 530000, "northing": 180400,
                                  "closest_address": "10 Downing Street, London", "hazard": "cyclists"}
    assert case["attachments"] == [{"url": "https://fixmystreet.example/photo/1001.0.full.jpeg",
                                    "name": "1001.0.full.jpeg", "content_type": "image/jpeg"}]

    [request] = simple_xml(client.call("GET", f"requests/{report.external_id}.xml", "requests",
                                       [("api_key", client.api_key)]).content)["request"]
    assert (request["status"], request["service_code"], request["service_name"]) == ("open", "highways.pothole",
                                                                                     "Pothole")
    assert (float(request["lat"]), float(request["long"])) == (51.507748, -0.127969)
    history = running.client.get(f"/v1/cases/{case['case_id']}/history")  # the CRM's key: not its case
    assert history.status_code == 404
    with running.broker.store.read() as session:
        steps = session.execute(select(AuditEntry.step, AuditEntry.actor, AuditEntry.detail)
                                .where(AuditEntry.case_pk == case_pk_of(report)).order_by(AuditEntry.id)).all()
    assert (steps[0].step, steps[0].actor, steps[0].detail["via"]) == ("received", "system:fixmystreet", "open311")


def test_a_report_sent_again_after_its_answer_was_lost_gets_the_same_id_and_creates_nothing(
        running: RunningBroker, receiver: WebhookReceiver) -> None:
    client = fixmystreet(running)
    report = pothole(2002)
    with answers_lost(running.base_url) as lossy:
        assert not client.send(report, endpoint=f"{lossy}/open311/v2/")  # committed there, the answer lost
    assert report.send_fail_count == 1 and report.external_id is None
    # Five minutes on, FixMyStreet sends it again; its geocoder answers differently this time.
    report.closest_address = "11 Downing Street, London"
    assert client.send(report)
    assert client.send(report)  # and once more, for good measure: still the same
    with running.broker.store.read() as session:
        [case] = session.scalars(select(CaseRecord).where(CaseRecord.source == "fixmystreet")).all()
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 1
    assert report.external_id == f"CB-{case.id}"
    assert case.snapshot["location"]["description"] == "10 Downing Street, London"  # the first one stands
    running.wait_settled()
    assert len(receiver.on("/highways")) == 1

    # A client that numbers nothing: the report is identified by all it says.
    bare = {"api_key": client.api_key, "service_code": "highways.street_light", "address_string": "Lamp 14, "
            "Acacia Avenue", "description": "Out for a week"}
    first = httpx.post(f"{running.base_url}/open311/v2/requests.json", data=bare)
    again = httpx.post(f"{running.base_url}/open311/v2/requests.json", data=bare)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other = httpx.post(f"{running.base_url}/open311/v2/requests.json", data={**bare, "description": "Another"})
    assert other.json() != first.json()


def test_status_changes_and_public_notes_come_back_once_each_in_the_five_minute_and_nightly_polls(
        running: RunningBroker) -> None:
    client = fixmystreet(running)
    report = pothole(3003)
    assert client.send(report)
    assert client.poll() == []  # its own report is no news
    # Recorded only now, though it happened three hours ago (the LOB system was down): listed when recorded, so
    # inside the two-hour window that FixMyStreet would otherwise have dropped it from.
    late = lob_change(running, report, "investigating", reason="An inspector will visit", code="2000",
                      happened=datetime.now(UTC) - timedelta(hours=3))
    lob_change(running, report, "action_scheduled", reason="Repair booked", code="3000")
    with running.broker.store.read() as session:
        case = session.get_one(CaseRecord, case_pk_of(report))
    internal = CaseNoteAdded.model_validate({
        "event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), "source": "confirm",
        "case": {"case_id": case.case_id}, "note": {"text": "Crew says it is a big one", "internal": True}})
    running.broker.intake.accept_many([Submission(internal, "poll", "target:confirm", case_pk=case.id)])
    public = CaseNoteAdded.model_validate({
        "event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), "source": "confirm",
        "case": {"case_id": case.case_id}, "note": {"text": "Materials ordered"}})
    running.broker.intake.accept_many([Submission(public, "poll", "target:confirm", case_pk=case.id)])
    stale = lob_change(running, report, "investigating", reason="An old entry, read late", code="2000",
                       happened=datetime.now(UTC) - timedelta(hours=4), via="batch", source="highways-file")

    made = client.poll()
    assert [(c.text, c.problem_state, c.external_status_code) for c in made] == [
        ("An inspector will visit", "investigating", "2000"),
        ("Repair booked", "action scheduled", "3000"),
        ("Materials ordered", "action scheduled", ""),
        ("An old entry, read late", "action scheduled", ""),   # superseded: its words, not its status
    ]
    assert report.state == "action scheduled" and late in client.comments and stale in client.comments
    assert client.dropped == []
    for _ in range(3):  # every five minutes: the same updates again, nothing new
        assert client.poll() == []
    assert client.poll(hours=24) == []  # the nightly catch-up
    assert len(client.fetched) == 4 * 5
    ids = [item["update_id"] for item in client.fetched]
    assert len(set(ids)) == 4
    by_id: dict[str, list[dict[str, Any]]] = {}
    for item in client.fetched:
        by_id.setdefault(item["update_id"], []).append(item)
    assert all(all(copy == copies[0] for copy in copies) for copies in by_id.values())  # same id, same content

    lob_change(running, report, "fixed", reason="Filled", code="4000")
    [fixed] = client.poll()
    assert (fixed.problem_state, fixed.external_status_code) == ("fixed - council", "4000")
    requests = client.call("GET", "requests.json", "requests", [("api_key", client.api_key),
                                                                ("service_request_id", report.external_id or "")])
    [request] = requests.json()
    assert (request["status"], request["status_notes"]) == ("closed", "Filled")


def test_residents_comments_and_a_reopening_reach_the_target_once_each(running: RunningBroker,
                                                                        receiver: WebhookReceiver) -> None:
    client = fixmystreet(running)
    report = pothole(4004)
    assert client.send(report)
    receiver.wait_for(1, "/highways")
    comment = client.post_comment(report, 501, "It is getting bigger", photo="https://fixmystreet.example/c/501.jpeg")
    assert comment.external_id
    assert client.send_comment(comment) == comment.external_id  # sent again (FixMyStreet retries): same answer
    sent = receiver.wait_for(2, "/highways")
    note = sent[1].body["event"]
    assert (note["event_type"], note["source"], note["case"]["case_id"]) == ("case.note_added", "fixmystreet",
                                                                            "4004")
    assert note["note"] == {"text": "It is getting bigger\n\nhttps://fixmystreet.example/c/501.jpeg",
                            "author": "Ada Lovelace", "internal": False}
    assert client.poll() == []  # a resident's own comment is never handed back

    lob_change(running, report, "fixed", reason="Filled", code="4000")
    assert [c.problem_state for c in client.poll()] == ["fixed - council"]
    time.sleep(1)  # the resident reads of the repair, then disagrees (FixMyStreet sends whole seconds)
    reopened = client.post_comment(report, 502, "Not fixed at all", reopen=True)
    assert reopened.external_id
    running.wait_settled()
    events = [r.body["event"] for r in receiver.on("/highways")]
    assert [(e["event_type"], e.get("change", {}).get("status")) for e in events] == [
        ("case.created", None), ("case.note_added", None), ("case.status_changed", "fixed"),
        ("case.status_changed", "open")]
    assert events[-1]["change"]["reason"] == "Not fixed at all"
    with running.broker.store.read() as session:
        assert session.get_one(CaseRecord, case_pk_of(report)).status == "open"


def test_requests_are_listed_by_id_service_status_and_date_newest_first(running: RunningBroker) -> None:
    client = fixmystreet(running)
    reports = [pothole(5000 + n) for n in range(3)]
    for report in reports:
        assert client.send(report)
    light = Report(id=5100, service_code="highways.street_light", title="Dark", detail="Lamp out")
    assert client.send(light)
    lob_change(running, reports[0], "fixed", reason="Done")

    def listed(**params: str) -> list[str]:
        answer = client.call("GET", "requests.json", "requests", [("api_key", client.api_key), *params.items()])
        assert answer.status_code == 200, answer.text
        return [request["service_request_id"] for request in answer.json()]

    everything = listed()
    assert everything == [light.external_id, *(r.external_id for r in reversed(reports))]
    assert listed(service_code="highways.street_light") == [light.external_id]
    assert listed(status="closed") == [reports[0].external_id]
    assert reports[0].external_id not in listed(status="open")
    ids = f"{reports[1].external_id},{light.external_id}"
    assert listed(service_request_id=ids, status="closed") == [reports[1].external_id, light.external_id]
    assert listed(service_request_id="5000") == [reports[0].external_id]  # FixMyStreet's own number finds it too
    assert listed(service_request_id="CB-\x00,\x00") == []  # PostgreSQL cannot even be asked about a NUL
    assert listed(service_code="highways.\x00") == []
    nul = client.call("GET", "requests/%00.json", "requests", [("api_key", client.api_key)])
    assert nul.status_code == 404
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert listed(start_date=future) == []
    xml = client.call("GET", "requests.xml", "requests", [("api_key", client.api_key)])
    assert len(simple_xml(xml.content)["request"]) == 4
    other = FixMyStreet(client.endpoint, create_key(running.broker.store, "another-portal"))
    assert other.call("GET", "requests.json", "requests", [("api_key", other.api_key)]).json() == []
    assert json.loads(other.call("GET", f"requests/{light.external_id}.json", "requests",
                                 [("api_key", other.api_key)]).content)[0]["code"] == 404


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_the_service_list_definitions_and_discovery_as_fixmystreet_reads_them(running: RunningBroker,
                                                                               fmt: str) -> None:
    client = fixmystreet(running, fmt=fmt)
    services = client.service_list()
    pothole_service = next(s for s in services if s["service_code"] == "highways.pothole")
    assert pothole_service["group"] == "Roads and pavements" and "pothole" in pothole_service["keywords"]
    assert str(pothole_service["metadata"]).lower() == "true"
    definition = client.service_meta_info("highways.pothole")
    by_code = {attribute["code"]: attribute for attribute in definition["attributes"]}
    assert by_code["fixmystreet_id"]["automated"] == "server_set"
    assert by_code["uprn"]["automated"] == "hidden_field"
    assert [value["key"] for value in by_code["hazard"]["values"]] == ["cyclists", "pedestrians", "vehicles"]
    assert sorted(int(attribute["order"]) for attribute in definition["attributes"]) == list(range(1, 9))
    discovery = client.call("GET", f"discovery.{fmt}", "discovery")
    endpoint = discovery.json()["endpoints"][0] if fmt == "json" else simple_xml(discovery.content)["endpoints"][
        "endpoint"]
    assert endpoint["url"] == f"{running.settings.api_base_url}/open311/v2"
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"


def test_copies_of_a_report_arriving_at_once_make_one_case_and_get_one_id(running: RunningBroker,
                                                                          receiver: WebhookReceiver) -> None:
    client = fixmystreet(running)
    copies = [pothole(6006) for _ in range(6)]
    with ThreadPoolExecutor(len(copies)) as pool:
        sent = list(pool.map(client.send, copies))
    assert all(sent), [copy.send_fail_reason for copy in copies]
    assert len({copy.external_id for copy in copies}) == 1
    with running.broker.store.read() as session:
        assert session.scalar(select(func.count()).select_from(CaseRecord)) == 1
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 1
    running.wait_settled()
    assert len(receiver.on("/highways")) == 1
