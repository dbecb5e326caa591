"""The core pipeline end to end over HTTP: on both transports (memory, RabbitMQ) and stores (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select
from support.envelopes import case_created, envelope, note_added, status_changed
from support.harness import RunningBroker
from support.receiver import Answer, WebhookReceiver

from broker.store.tables import FailedMessage


def test_case_is_delivered_with_lob_reference_and_full_timeline(running: RunningBroker,
                                                                receiver: WebhookReceiver) -> None:
    body = case_created("PH-1001")
    response = running.post_case(body)

    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["case_id"] == "PH-1001"
    assert receipt["event_id"] == body["event_id"]
    assert receipt["status_url"].endswith("/v1/cases/PH-1001")
    assert receipt["targets"] == ["highways"]

    [delivered] = receiver.wait_for(1, "/highways")
    assert delivered.body["event"]["event_id"] == body["event_id"]
    assert delivered.body["target_service_code"] == "POT"
    assert delivered.headers["idempotency-key"] == body["event_id"]
    running.wait_settled()

    case = running.client.get("/v1/cases/PH-1001").json()
    assert case["status"] == "open"
    assert case["targets"] == ["highways"]
    assert case["external_refs"] == {"highways": "REF-1"}
    [delivery] = case["deliveries"]
    assert (delivery["target"], delivery["state"], delivery["attempts"], delivery["external_ref"]) == (
        "highways", "delivered", 1, "REF-1")

    history = running.client.get("/v1/cases/PH-1001/history").json()
    steps = [entry["step"] for entry in history["entries"]]
    assert steps == ["received", "validated", "routed", "delivered"]
    assert history["entries"][0]["actor"] == "system:crm"
    assert history["entries"][3]["target"] == "highways"
    assert all(entry["at"].endswith("Z") or "+00:00" in entry["at"] for entry in history["entries"])


def test_follow_up_events_reach_targets_in_accepted_order(running: RunningBroker, receiver: WebhookReceiver) -> None:
    assert running.post_case(case_created("PH-2")).status_code == 202
    receiver.wait_for(1, "/highways")
    updated = case_created("PH-2", description="Now two potholes")
    updated["event_type"] = "case.updated"
    events = [updated, note_added("PH-2"), status_changed("PH-2", "in_progress"),
              envelope("case.closed", case={"case_id": "PH-2"})]
    for event in events:
        response = running.post_event("PH-2", event)
        assert response.status_code == 202, response.text

    highways = receiver.wait_for(5, "/highways")
    assert [item.body["event"]["event_type"] for item in highways] == [
        "case.created", "case.updated", "case.note_added", "case.status_changed", "case.closed"]
    # Status events also go to the CRM's own route, but never back to the CRM itself (it sent them).
    assert receiver.on("/crm") == []
    running.wait_settled()
    case = running.client.get("/v1/cases/PH-2").json()
    assert case["status"] == "closed"
    assert len(case["deliveries"]) == 5


def test_status_events_from_another_system_are_routed_to_the_crm(running: RunningBroker,
                                                                 receiver: WebhookReceiver) -> None:
    from broker.model.events import parse_event

    running.post_case(case_created("PH-3"))
    receiver.wait_for(1, "/highways")
    # The contractor's system reports a status change for a case it holds under its own source.
    contractor_case = case_created("PH-3", source="contractor")
    event = parse_event(__import__("json").dumps(contractor_case))
    running.broker.intake.accept(event, via="test", actor="system:contractor")
    change = parse_event(__import__("json").dumps(status_changed("PH-3", "fixed", source="contractor")))
    running.broker.intake.accept(change, via="test", actor="system:contractor")
    running.broker.wake_relay()
    [crm] = receiver.wait_for(1, "/crm")
    assert crm.body["event"]["change"]["status"] == "fixed"


def test_duplicate_event_id_returns_the_original_receipt(running: RunningBroker, receiver: WebhookReceiver) -> None:
    body = case_created("PH-4")
    first = running.post_case(body).json()
    again = running.post_case(body)
    assert again.status_code == 202
    assert again.json()["duplicate"] is True
    assert again.json()["event_id"] == first["event_id"]
    assert again.json()["targets"] == ["highways"]
    running.wait_settled()
    assert receiver.event_counts("/highways") == {body["event_id"]: 1}


def test_idempotency_key_header_deduplicates_a_resent_request(running: RunningBroker,
                                                              receiver: WebhookReceiver) -> None:
    body = case_created("PH-5")
    headers = {"Idempotency-Key": "crm-submission-77"}
    first = running.post_case(body, headers=headers).json()
    assert first["duplicate"] is False
    resent = dict(body, event_id=str(uuid.uuid4()))  # the CRM minted a new event id on its retry
    again = running.post_case(resent, headers=headers)
    assert again.status_code == 202
    assert again.json()["duplicate"] is True
    assert again.json()["event_id"] == first["event_id"]  # the original receipt, not a second case
    assert running.post_case(body, headers=headers).json()["duplicate"] is True
    # The same key on a request that really differs is a conflict, not a silent second case.
    altered = dict(resent, case=dict(body["case"], description="Something else entirely"))
    conflict = running.post_case(altered, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["errors"][0]["field"] == "Idempotency-Key"
    running.wait_settled()
    assert len(receiver.on("/highways")) == 1


def test_same_event_id_with_different_content_is_a_conflict(running: RunningBroker) -> None:
    body = case_created("PH-6")
    running.post_case(body)
    altered = case_created("PH-6-other")
    altered["event_id"] = body["event_id"]
    response = running.post_case(altered)
    assert response.status_code == 409
    assert response.json()["errors"][0]["field"] == "event_id"


def test_bad_input_gets_a_clear_error(running: RunningBroker) -> None:
    client = running.client
    malformed = client.post("/v1/cases", content=b'{"event_id": ', headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "malformed_json"

    wrong = case_created("PH-7")
    wrong["case"]["location"] = {}
    wrong["case"]["channel"] = "carrier_pigeon"
    wrong["occurred_at"] = "2026-01-01T10:00:00"
    response = client.post("/v1/cases", json=wrong)
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"case.location", "case.channel", "occurred_at"}

    extra = case_created("PH-8", colour="red")
    response = client.post("/v1/cases", json=extra)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "case.colour"

    unknown = case_created("PH-9", service_code="highways.dragon")
    response = client.post("/v1/cases", json=unknown)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "case.service_code", "message": response.json()["errors"][0]
                                          ["message"]}]
    assert "'highways.dragon'" in response.json()["message"]

    too_big = case_created("PH-10", description="x" * 19_000, attributes={f"a{i}": "y" * 60 for i in range(20_000)})
    assert client.post("/v1/cases", json=too_big).status_code == 413
    encoded = json.dumps(too_big).encode()
    chunked = client.post("/v1/cases", content=iter([encoded[i:i + 65536] for i in range(0, len(encoded), 65536)]),
                          headers={"Content-Type": "application/json"})  # no Content-Length: streamed in chunks
    assert chunked.status_code == 413
    assert chunked.json()["error"] == "payload_too_large"

    not_a_case = running.post_event("PH-404", note_added("PH-404"))
    assert not_a_case.status_code == 404

    mismatch = running.post_event("PH-other", note_added("PH-11"))
    assert mismatch.status_code == 422

    # Nothing above stopped the flow: a good case still goes through.
    assert running.post_case(case_created("PH-12")).status_code == 202
    assert client.get("/v1/cases/PH-12").status_code == 200


def test_api_keys_are_required_and_scoped_to_their_system(running: RunningBroker) -> None:
    import httpx

    anonymous = httpx.post(f"{running.base_url}/v1/cases", json=case_created())
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong_key = httpx.get(f"{running.base_url}/v1/cases/X", headers={"Authorization": "Bearer cbk_nope"})
    assert wrong_key.status_code == 401
    other_source = running.post_case(case_created(source="portal"))
    assert other_source.status_code == 403


def test_target_rejection_is_recorded_as_failed_with_the_reason(running: RunningBroker,
                                                                receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(status=422, body={"error": "street not adopted"}))
    running.post_case(case_created("PH-13"))
    running.wait_settled()
    case = running.client.get("/v1/cases/PH-13").json()
    assert case["deliveries"][0]["state"] == "failed"
    assert case["deliveries"][0]["last_error"].startswith("http_422")
    steps = [entry["step"] for entry in running.client.get("/v1/cases/PH-13/history").json()["entries"]]
    assert steps[-1] == "failed"
    with running.broker.store.read() as session:
        [failed] = session.scalars(select(FailedMessage)).all()
    assert (failed.target, failed.error_class, failed.reason) == ("highways", "permanent", "http_422")
    assert "street not adopted" in failed.error_text or failed.error_text.startswith("HTTP 422")


def test_transient_error_is_retried_in_process(running: RunningBroker, receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(status=503))
    running.post_case(case_created("PH-14"))
    running.wait_settled()
    case = running.client.get("/v1/cases/PH-14").json()
    assert case["deliveries"][0]["state"] == "delivered"
    assert case["deliveries"][0]["attempts"] == 2
    steps = [entry["step"] for entry in running.client.get("/v1/cases/PH-14/history").json()["entries"]]
    assert steps == ["received", "validated", "routed", "attempt_failed", "delivered"]


def test_batch_targets_are_recorded_as_pending(running: RunningBroker, receiver: WebhookReceiver) -> None:
    response = running.post_case(case_created("BIN-1", service_code="waste.missed_bin"))
    assert response.json()["targets"] == ["waste"]
    case = running.client.get("/v1/cases/BIN-1").json()
    assert [(d["target"], d["mode"], d["state"]) for d in case["deliveries"]] == [("waste", "batch", "batch_pending")]
    assert receiver.on("/waste") == []


def test_openapi_is_served_with_the_case_endpoints(running: RunningBroker) -> None:
    import httpx

    spec = httpx.get(f"{running.base_url}/openapi.json").json()
    assert {"/v1/cases", "/v1/cases/{case_id}", "/v1/cases/{case_id}/history",
            "/v1/cases/{case_id}/events"} <= set(spec["paths"])
    docs = httpx.get(f"{running.base_url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_a_lone_surrogate_escape_is_refused_with_the_field_named(running: RunningBroker) -> None:
    # Valid JSON syntax, but "\ud800" is half a UTF-16 pair: no UTF-8 text, JSON column or LOB system holds it.
    for field, case in (("case.description", case_created("PH-13", description="@")),
                        ("case.attributes.depth", case_created("PH-13", attributes={"depth": "@"}))):
        body = json.dumps(case).replace('"@"', '"broken \\ud800"', 1)
        response = running.client.post("/v1/cases", content=body.encode(),
                                       headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == [field]
    assert running.post_case(case_created("PH-13")).status_code == 202
