"""Support staff's failed-message store: list, show, replay and discard, each audited with who did it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from support.envelopes import case_created, status_changed
from support.harness import RunningBroker
from support.processes import broker_env, run_broker
from support.receiver import Answer, WebhookReceiver

from broker.store.failures import record_intake_failure
from broker.store.tables import AuditEntry, FailedMessage

pytestmark = pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)


def cli(running: RunningBroker, tmp_path: Path, *args: str) -> tuple[int, str]:
    settings = running.settings
    env = broker_env(database_url=settings.database_url, mappings_dir=str(settings.mappings_dir),
                     amqp_namespace=settings.amqp_namespace)
    result = run_broker("failed", *args, env=env, cwd=tmp_path)
    return result.returncode, result.stdout + result.stderr


def listed(running: RunningBroker, tmp_path: Path, *filters: str) -> list[dict[str, object]]:
    code, output = cli(running, tmp_path, "list", "--json", *filters)
    assert code == 0, output
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_rejected_delivery_is_listed_shown_fixed_and_replayed(running: RunningBroker, receiver: WebhookReceiver,
                                                                tmp_path: Path) -> None:
    receiver.answer("/highways", Answer(422, {"error": "street not adopted"}))
    running.post_case(case_created("FM-1"))
    running.post_case(case_created("FM-2", service_code="environment.noise"))
    running.wait_settled()

    [row] = listed(running, tmp_path)
    assert (row["target"], row["case_id"], row["error_class"], row["reason"]) == (
        "highways", "FM-1", "permanent", "http_422")
    assert listed(running, tmp_path, "--target", "environment") == []
    assert [r["id"] for r in listed(running, tmp_path, "--service", "highways.*", "--reason", "http_422")] == [
        row["id"]]

    code, shown = cli(running, tmp_path, "show", str(row["id"]))
    assert code == 0 and "http_422" in shown and "FM-1" in shown

    # The receiver has been fixed (it now answers 201): replay sends the case again.
    code, output = cli(running, tmp_path, "replay", str(row["id"]), "--actor", "alice")
    assert code == 0, output
    running.wait_until(lambda: running.delivery_states().get("delivered") == 2, what="the replayed delivery")
    case = running.client.get("/v1/cases/FM-1").json()
    assert case["deliveries"][0]["state"] == "delivered"
    history = running.client.get("/v1/cases/FM-1/history").json()["entries"]
    assert [(e["step"], e["actor"]) for e in history if e["step"] in ("failed", "replayed", "delivered")] == [
        ("failed", "casebridge"), ("replayed", "user:alice"), ("delivered", "target:highways")]
    assert listed(running, tmp_path) == []
    [resolved] = listed(running, tmp_path, "--state", "replayed")
    assert resolved["resolved_by"] == "user:alice"

    code, output = cli(running, tmp_path, "replay", str(row["id"]))
    assert code == 1 and "replayed" in output  # a second replay is refused, not repeated


def test_discarding_a_failed_create_lets_the_cases_later_events_go(running: RunningBroker,
                                                                    receiver: WebhookReceiver,
                                                                    tmp_path: Path) -> None:
    receiver.answer("/highways", Answer(400, {"error": "bad grid reference"}))
    running.post_case(case_created("FM-3"))
    running.wait_until(lambda: running.delivery_states() == {"failed": 1}, what="the create to fail")
    running.post_event("FM-3", status_changed("FM-3", "in_progress"))
    running.wait_until(lambda: running.delivery_states() == {"failed": 1, "waiting": 1}, what="the update to wait")
    assert len(receiver.on("/highways")) == 1

    [row] = listed(running, tmp_path)
    code, output = cli(running, tmp_path, "discard", str(row["id"]))
    assert code == 2 and "--reason" in output  # a reason is required
    code, output = cli(running, tmp_path, "discard", str(row["id"]), "--reason", "created by hand in the LOB",
                       "--actor", "bob")
    assert code == 0, output
    assert running.wait_settled() == {"discarded": 1, "delivered": 1}
    assert receiver.on("/highways")[-1].body["event"]["event_type"] == "case.status_changed"
    with running.broker.store.read() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.step == "discarded")).one()
    assert audit.actor == "user:bob" and audit.detail["reason"] == "created by hand in the LOB"


def test_an_intake_failure_is_replayed_once_its_cause_is_fixed(running: RunningBroker, tmp_path: Path) -> None:
    early = status_changed("FM-4", "in_progress")  # arrived before the case existed
    failed_id = record_intake_failure(running.broker.store, reason="rejected", error_text="no case 'FM-4'",
                                      raw_body=json.dumps(early).encode(), event_id=early["event_id"])
    code, output = cli(running, tmp_path, "replay", str(failed_id))
    assert code == 0 and "still refused" in output
    with running.broker.store.read() as session:
        assert session.get_one(FailedMessage, failed_id).attempts == 2

    running.post_case(case_created("FM-4"))
    code, output = cli(running, tmp_path, "replay", str(failed_id), "--actor", "carol")
    assert code == 0 and "accepted as case FM-4" in output
    running.wait_settled()
    assert running.client.get("/v1/cases/FM-4").json()["status"] == "in_progress"
    steps = [(e["step"], e["actor"]) for e in running.client.get("/v1/cases/FM-4/history").json()["entries"]]
    assert ("replayed", "user:carol") in steps


def test_replay_needs_ids_or_a_filter(running: RunningBroker, tmp_path: Path) -> None:
    code, output = cli(running, tmp_path, "replay")
    assert code == 2 and "filter" in output


def test_transient_failures_keep_each_attempt_and_replay_by_filter(running: RunningBroker, receiver: WebhookReceiver,
                                                                   tmp_path: Path) -> None:
    receiver.answer("/environment", *[Answer(503, {"error": "down for maintenance"})] * 100)
    for n in (1, 2):
        running.post_case(case_created(f"FM-ENV-{n}", service_code="environment.noise"))
    running.post_case(case_created("FM-HW-1"))
    running.wait_until(lambda: running.delivery_states() == {"failed": 2, "delivered": 1}, timeout=60,
                       what="the environment deliveries to give up")

    rows = listed(running, tmp_path, "--error-class", "transient", "--since", "2000-01-01")
    assert sorted(str(r["case_id"]) for r in rows) == ["FM-ENV-1", "FM-ENV-2"]
    assert listed(running, tmp_path, "--error-class", "permanent") == []
    assert listed(running, tmp_path, "--since", "2999-01-01") == []

    code, shown = cli(running, tmp_path, "show", str(rows[0]["id"]), "--json")
    assert code == 0, shown
    attempts = json.loads(shown)["attempt_history"]
    assert len(attempts) >= 2 and attempts[-1]["step"] == "failed"
    # Every attempt that reached the target says what it answered; one delivered in the same window after the
    # target's circuit opened was not called, and says so.
    assert "http_503" in {a["reason"] for a in attempts}
    assert {a["reason"] for a in attempts} <= {"http_503", "circuit_open"}

    receiver.forget_answers("/environment")
    code, output = cli(running, tmp_path, "replay", "--target", "environment", "--actor", "dave")
    assert code == 0, output
    assert running.wait_settled() == {"delivered": 3}
    assert listed(running, tmp_path) == []
    assert {str(r["resolved_by"]) for r in listed(running, tmp_path, "--state", "replayed")} == {"user:dave"}


def test_the_targets_refusal_is_in_the_failed_message_text(running: RunningBroker, receiver: WebhookReceiver,
                                                           tmp_path: Path) -> None:
    receiver.answer("/highways", Answer(422, {"error": "ward not recognised: use the ward's code"}))
    running.post_case(case_created("FM-WORDS"))
    running.wait_settled()
    [row] = listed(running, tmp_path)
    assert "ward not recognised" in str(row["error_text"])
    code, shown = cli(running, tmp_path, "show", str(row["id"]), "--json")
    assert code == 0, shown
    assert "ward not recognised: use the ward's code" in json.loads(shown)["error_text"]
    assert json.loads(shown)["error_text"].startswith("HTTP 422 from ")
