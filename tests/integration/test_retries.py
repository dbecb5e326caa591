"""Transient failures are retried later through the queue, per-case order holds, and crashes are resumed safely."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import select
from support.envelopes import case_created, status_changed
from support.harness import RunningBroker
from support.receiver import Answer, WebhookReceiver

from broker.delivery.worker import DeliveryWorker
from broker.store import claims
from broker.store.tables import AuditEntry, DeliveryRecord, FailedMessage


def steps_of(running: RunningBroker, case_id: str) -> list[str]:
    return [entry["step"] for entry in running.client.get(f"/v1/cases/{case_id}/history").json()["entries"]]


def test_a_target_that_stays_down_is_retried_later_then_delivered(running: RunningBroker,
                                                                   receiver: WebhookReceiver) -> None:
    # quick_retries=1 in the tests: two calls in-process, then a redelivery through the queue (a 503 says the
    # request was not acted on, so it may be tried again at once).
    receiver.answer("/highways", Answer(503), Answer(503), Answer(503), Answer(503))
    running.post_case(case_created("RT-1"))
    running.wait_until(lambda: running.delivery_states() == {"retrying": 1}, what="a scheduled retry")
    with running.broker.store.read() as session:
        delivery = session.scalars(select(DeliveryRecord)).one()
        assert delivery.attempts == 2 and delivery.next_attempt_at is not None
        assert delivery.last_error and delivery.last_error.startswith("http_503")
    assert running.wait_settled() == {"delivered": 1}
    case = running.client.get("/v1/cases/RT-1").json()
    assert case["deliveries"][0]["attempts"] == 5
    assert steps_of(running, "RT-1") == [
        "received", "validated", "routed", "attempt_failed", "retry_scheduled", "attempt_failed",
        "retry_scheduled", "delivered"]
    assert len(receiver.on("/highways")) == 5
    assert set(receiver.event_counts("/highways").values()) == {1}


def test_retry_after_from_the_target_is_honoured(running: RunningBroker, receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(429, headers={"Retry-After": "3"}), Answer(429, headers={"Retry-After": "3"}))
    running.post_case(case_created("RT-2"))
    running.wait_until(lambda: running.delivery_states() == {"retrying": 1}, timeout=30, what="a scheduled retry")
    with running.broker.store.read() as session:
        delivery = session.scalars(select(DeliveryRecord)).one()
        scheduled = session.scalars(select(AuditEntry).where(AuditEntry.step == "retry_scheduled")).one()
    assert delivery.next_attempt_at is not None
    waited = (delivery.next_attempt_at - datetime.fromisoformat(scheduled.at.isoformat())).total_seconds()
    assert 2.9 <= waited <= 3.2, waited
    first_calls = [item.at for item in receiver.on("/highways")]
    assert first_calls[1] - first_calls[0] >= 2.9  # the in-process retry waited too
    assert running.wait_settled(timeout=30) == {"delivered": 1}
    assert receiver.on("/highways")[-1].at - first_calls[1] >= 2.9


def test_retries_give_up_after_the_targets_limit(running: RunningBroker, receiver: WebhookReceiver) -> None:
    # The environment target gives up 1.8 s after its first attempt.
    receiver.answer("/environment", *[Answer(503)] * 50)
    running.post_case(case_created("RT-3", service_code="environment.noise"))
    running.wait_until(lambda: running.delivery_states() == {"failed": 1}, timeout=30, what="giving up")
    with running.broker.store.read() as session:
        failed = session.scalars(select(FailedMessage)).one()
    assert (failed.error_class, failed.reason, failed.target) == ("transient", "http_503", "environment")
    assert failed.attempts >= 4
    assert (failed.last_failed_at - failed.first_failed_at).total_seconds() >= 1.0
    assert steps_of(running, "RT-3")[-1] == "failed"


def test_a_later_event_waits_for_an_earlier_one_being_retried(running: RunningBroker,
                                                               receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(503), Answer(503))
    running.post_case(case_created("ORD-1"))
    running.wait_until(lambda: running.delivery_states() == {"retrying": 1}, what="the create to be retrying")
    assert running.post_event("ORD-1", status_changed("ORD-1", "in_progress")).status_code == 202
    assert running.post_event("ORD-1", status_changed("ORD-1", "action_scheduled")).status_code == 202
    assert running.wait_settled() == {"delivered": 3}
    delivered = [item.body["event"]["event_type"] for item in receiver.on("/highways")
                 if item.headers["x-test-answered"].startswith("2")]
    assert delivered == ["case.created", "case.status_changed", "case.status_changed"]
    statuses = [item.body["event"]["change"]["status"] for item in receiver.on("/highways")
                if item.body["event"]["event_type"] == "case.status_changed"]
    assert statuses == ["in_progress", "action_scheduled"]
    assert "waiting" in steps_of(running, "ORD-1")


def test_a_delivery_resumed_after_a_crash_asks_the_target_first(running: RunningBroker,
                                                                receiver: WebhookReceiver) -> None:
    """The worker called the target, which took the case, then died before recording it."""
    running.broker.shutdown()  # no consumers: this test plays the workers itself
    running.post_case(case_created("CR-1"))
    store = running.broker.store
    with store.read() as session:
        delivery_id = session.scalars(select(DeliveryRecord.id)).one()
    pending = claims.load_pending(store, delivery_id)
    assert pending is not None
    assert claims.claim(store, pending) is claims.Claim.go
    assert claims.claim(store, pending) is claims.Claim.skip  # another worker has it in flight
    adapter = running.broker_adapters()["highways"]
    first = adapter.deliver(DeliveryWorker._request(pending, 1))  # lands at the target; then the worker dies

    worker = DeliveryWorker(store, {"highways": adapter})
    assert worker.handle(delivery_id) == "skipped"  # a fresh copy of the pointer leaves it to its worker
    assert worker.handle(delivery_id, redelivered=True) == "delivered"
    assert len(receiver.on("/highways")) == 1 and receiver.lookups == 1
    with store.read() as session:
        recorded = session.get_one(DeliveryRecord, delivery_id)
    assert (recorded.state, recorded.external_ref) == ("delivered", first.external_ref)


def test_a_delivery_resumed_before_it_reached_the_target_is_sent(running: RunningBroker,
                                                                 receiver: WebhookReceiver) -> None:
    running.broker.shutdown()
    running.post_case(case_created("CR-2"))
    store = running.broker.store
    with store.read() as session:
        delivery_id = session.scalars(select(DeliveryRecord.id)).one()
    pending = claims.load_pending(store, delivery_id)
    assert pending is not None and claims.claim(store, pending) is claims.Claim.go
    worker = DeliveryWorker(store, running.broker_adapters())
    time.sleep(0.01)
    assert worker.handle(delivery_id, redelivered=True) == "delivered"
    assert len(receiver.on("/highways")) == 1 and receiver.lookups == 1
