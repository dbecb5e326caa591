"""A call once started may have landed: it is counted as it starts, and every later path asks the target first.

These tests play the workers themselves (the running broker's consumers are stopped), so each step is exact: a
worker that claims a delivery, calls the target and dies before recording the outcome; the worker that takes it
over; the circuit, the look-up and the clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import select, update
from support.console import officer_client
from support.envelopes import case_created, status_changed
from support.harness import RunningBroker
from support.processes import broker_env, run_broker
from support.receiver import Answer, WebhookReceiver

from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.config import WebhookConfig
from broker.config.models import CircuitPolicy, UnconfirmedPolicy
from broker.delivery.circuit import CircuitBreaker
from broker.delivery.reconciliation import REASON, reconcile_unconfirmed
from broker.delivery.worker import DeliveryWorker
from broker.errors import DeliveryUnconfirmed
from broker.model.events import utc_now
from broker.plugins.contract import Capability, DeliveryOutcome, DeliveryRequest
from broker.store import claims
from broker.store.database import Store
from broker.store.tables import AuditEntry, DeliveryRecord, FailedMessage

DEAD_WORKER = "worker-that-died"


class UnsureWebhookAdapter(WebhookAdapter):
    """A webhook target that, like Confirm, cannot be asked by our reference: only a wider search finds a record."""

    capabilities: ClassVar[frozenset[Capability]] = WebhookAdapter.capabilities | {Capability.reconcile}

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        raise DeliveryUnconfirmed("cannot_look_up", "this target finds records by its own number only")

    def reconcile(self, unconfirmed: Sequence[DeliveryRequest]) -> dict[str, DeliveryOutcome]:
        found = {}
        for request in unconfirmed:
            outcome = WebhookAdapter.find_delivered(self, request)
            if outcome is not None:
                found[request.our_reference] = outcome
        return found


def webhook(receiver: WebhookReceiver, *, timeout: float = 5.0, unsure: bool = False) -> WebhookAdapter:
    config = WebhookConfig.model_validate({"url": f"{receiver.url}/highways",
                                           "lookup_url": f"{receiver.url}/highways/lookup",
                                           "timeout_seconds": timeout})
    return (UnsureWebhookAdapter if unsure else WebhookAdapter)("highways", config, {})


def open_breaker(store: Store) -> CircuitBreaker:
    breaker = CircuitBreaker("highways", CircuitPolicy(failures=1, open_seconds=60), store)
    breaker.failed("http_503")
    assert breaker.seconds_until_probe() > 0
    return breaker


def only_delivery(store: Store) -> DeliveryRecord:
    with store.read() as session:
        rows = session.scalars(select(DeliveryRecord).where(DeliveryRecord.target == "highways")
                               .order_by(DeliveryRecord.id)).all()
    return rows[0]


def make_due(store: Store, delivery_id: int) -> None:
    with store.transaction() as session:
        session.execute(update(DeliveryRecord).where(DeliveryRecord.id == delivery_id)
                        .values(next_attempt_at=utc_now() - timedelta(seconds=1)))


def dies_inside_the_call(store: Store, adapter: WebhookAdapter, delivery_id: int) -> DeliveryOutcome:
    """A worker claims the delivery and calls the target, which takes the case; the worker dies before recording
    it (it never beat a heartbeat, so it counts as gone at once)."""
    pending = claims.load_pending(store, delivery_id)
    assert pending is not None
    assert claims.claim(store, pending, worker_id=DEAD_WORKER) is claims.Claim.go
    return adapter.deliver(DeliveryWorker._request(pending, pending.attempts + 1))


@pytest.fixture
def unsure_highways(monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver) -> None:
    """The reconciliation job builds the highways target as a webhook that cannot be asked by our reference."""
    import broker.delivery.reconciliation

    original = broker.delivery.reconciliation.build_adapter

    def build(name: str, target: str, settings: dict[str, Any], mapping: dict[str, Any]) -> Any:
        return webhook(receiver, unsure=True) if target == "highways" else original(name, target, settings, mapping)

    monkeypatch.setattr(broker.delivery.reconciliation, "build_adapter", build)


@pytest.fixture
def idle(running: RunningBroker) -> RunningBroker:
    """The broker's store and API, with no consumers: the test plays the workers."""
    running.broker.shutdown()
    running.broker.store = Store(running.settings.database_url)
    return running


def posted_case(running: RunningBroker, case_id: str) -> int:
    assert running.post_case(case_created(case_id)).status_code == 202
    return only_delivery(running.broker.store).id


def test_an_attempt_is_counted_when_it_starts(idle: RunningBroker, receiver: WebhookReceiver) -> None:
    store = idle.broker.store
    delivery_id = posted_case(idle, "PL-COUNT")
    dies_inside_the_call(store, webhook(receiver), delivery_id)
    recorded = only_delivery(store)
    assert (recorded.state, recorded.attempts, recorded.may_have_landed) == ("in_flight", 1, True)


def test_a_take_over_while_the_circuit_is_open_still_asks_before_sending_again(
        idle: RunningBroker, receiver: WebhookReceiver) -> None:
    store = idle.broker.store
    adapter = webhook(receiver)
    delivery_id = posted_case(idle, "PL-CIRCUIT")
    first = dies_inside_the_call(store, adapter, delivery_id)

    paused = DeliveryWorker(store, {"highways": adapter}, breakers={"highways": open_breaker(store)},
                            quick_retries=1, worker_id="worker-b")
    assert paused.handle(delivery_id, redelivered=True) == "retrying"
    recorded = only_delivery(store)
    assert recorded.attempts == 1, "the dead worker's attempt counts; the paused one sent nothing"
    assert recorded.may_have_landed, "the take-over must not forget that the first call may have landed"

    make_due(store, delivery_id)
    worker = DeliveryWorker(store, {"highways": adapter}, quick_retries=1, worker_id="worker-c")
    assert worker.handle(delivery_id) == "delivered"  # a plain first-looking pointer, released by the relay
    assert len(receiver.on("/highways")) == 1, "the target was asked first, and had the case"
    assert receiver.lookups == 1
    assert only_delivery(store).external_ref == first.external_ref


def test_a_take_over_whose_look_up_fails_asks_again_on_every_later_attempt(
        idle: RunningBroker, receiver: WebhookReceiver) -> None:
    store = idle.broker.store
    adapter = webhook(receiver)
    delivery_id = posted_case(idle, "PL-LOOKUP")
    first = dies_inside_the_call(store, adapter, delivery_id)
    receiver.fail_lookups(3)

    worker = DeliveryWorker(store, {"highways": adapter}, quick_retries=1, worker_id="worker-b")
    assert worker.handle(delivery_id, redelivered=True) == "retrying"  # two look-ups, both 503
    assert only_delivery(store).may_have_landed
    make_due(store, delivery_id)
    assert worker.handle(delivery_id) == "delivered"  # one more 503, then the target finds it
    assert len(receiver.on("/highways")) == 1
    assert receiver.lookups == 1 and receiver.lookups_to_fail == 0
    recorded = only_delivery(store)
    assert (recorded.state, recorded.external_ref) == ("delivered", first.external_ref)
    with store.read() as session:
        delivered = session.scalars(select(AuditEntry).where(AuditEntry.step == "delivered")).one()
    assert delivered.detail["attempts"] == recorded.attempts == 5  # the dead worker's, then four that asked first


def test_each_wait_after_a_failed_look_up_is_longer_than_the_last(idle: RunningBroker,
                                                                  receiver: WebhookReceiver) -> None:
    store = idle.broker.store
    adapter = webhook(receiver)
    delivery_id = posted_case(idle, "PL-BACKOFF")
    dies_inside_the_call(store, adapter, delivery_id)
    receiver.fail_lookups(1_000)
    worker = DeliveryWorker(store, {"highways": adapter}, quick_retries=0, worker_id="worker-b",
                            policies={"highways": idle.broker.configuration.targets["highways"].definition.retry
                                      .model_copy(update={"delays_seconds": [10, 20, 40], "jitter": 0.1})})
    waits = []
    for round_number in range(5):
        before = utc_now()
        assert worker.handle(delivery_id, redelivered=round_number == 0) == "retrying"
        recorded = only_delivery(store)
        assert recorded.next_attempt_at is not None
        waits.append((recorded.next_attempt_at - before).total_seconds())
        make_due(store, delivery_id)
    assert 9 <= waits[0] <= 11.5 and 18 <= waits[1] <= 23 and 36 <= waits[2] <= 46, waits
    assert all(36 <= wait <= 46 for wait in waits[3:]), f"the longest wait repeats: {waits}"
    assert len(receiver.on("/highways")) == 1


def test_a_timeout_after_the_target_committed_is_not_retried_at_once_and_is_found_next_time(
        idle: RunningBroker, receiver: WebhookReceiver) -> None:
    store = idle.broker.store
    adapter = webhook(receiver, timeout=0.5)
    delivery_id = posted_case(idle, "PL-TIMEOUT")
    receiver.answer("/highways", Answer(201, delay=1.5))  # saves first, answers after the adapter gave up
    worker = DeliveryWorker(store, {"highways": adapter}, quick_retries=3)
    assert worker.handle(delivery_id) == "retrying"
    assert len(receiver.on("/highways")) == 1, "a call that may have landed is not repeated in-process"
    assert only_delivery(store).may_have_landed
    make_due(store, delivery_id)
    assert worker.handle(delivery_id) == "delivered"
    assert len(receiver.on("/highways")) == 1 and receiver.lookups == 1


def test_a_connection_refused_is_retried_at_once_without_asking(idle: RunningBroker,
                                                                receiver: WebhookReceiver) -> None:
    """Nothing can have landed when the connection was refused: the next attempt need not ask."""
    store = idle.broker.store
    delivery_id = posted_case(idle, "PL-REFUSED")
    closed = WebhookConfig.model_validate({"url": "http://127.0.0.1:9/highways",
                                           "lookup_url": "http://127.0.0.1:9/highways/lookup"})
    worker = DeliveryWorker(store, {"highways": WebhookAdapter("highways", closed, {})},
                            quick_retries=1)
    assert worker.handle(delivery_id) == "retrying"
    recorded = only_delivery(store)
    assert (recorded.attempts, recorded.may_have_landed) == (2, False)
    make_due(store, delivery_id)
    assert DeliveryWorker(store, {"highways": webhook(receiver)}).handle(delivery_id) == \
        "delivered"
    assert receiver.lookups == 0 and len(receiver.on("/highways")) == 1


def test_a_create_the_target_cannot_confirm_waits_for_reconciliation_and_holds_later_events(
        idle: RunningBroker, receiver: WebhookReceiver, unsure_highways: None) -> None:
    store = idle.broker.store
    adapter = webhook(receiver, unsure=True)
    delivery_id = posted_case(idle, "PL-UNSURE")
    first = dies_inside_the_call(store, adapter, delivery_id)
    worker = DeliveryWorker(store, {"highways": adapter}, worker_id="worker-b")
    assert worker.handle(delivery_id, redelivered=True) == "unconfirmed"
    assert len(receiver.on("/highways")) == 1

    assert idle.post_event("PL-UNSURE", status_changed("PL-UNSURE", "in_progress")).status_code == 202
    with store.read() as session:
        follow_up = session.scalars(select(DeliveryRecord).where(DeliveryRecord.target == "highways",
                                                                 DeliveryRecord.id != delivery_id)).one()
    assert worker.handle(follow_up.id) == "waiting", "an update never overtakes an unconfirmed create"

    summary = reconcile_unconfirmed(store, idle.broker.configuration)
    assert summary == {"highways": {"found": 1, "to_support_staff": 0, "still_waiting": 0}}
    recorded = only_delivery(store)
    assert (recorded.state, recorded.external_ref) == ("delivered", first.external_ref)
    with store.read() as session:
        released = session.get_one(DeliveryRecord, follow_up.id)
    assert released.state == "pending", "the follow-up is queued the moment the create is resolved"
    assert len(receiver.on("/highways")) == 1


def test_what_reconciliation_cannot_find_goes_to_support_staff_who_link_it_or_create_it_anyway(
        idle: RunningBroker, receiver: WebhookReceiver, unsure_highways: None, tmp_path: Path) -> None:
    store = idle.broker.store
    worker = DeliveryWorker(store, {"highways": webhook(receiver, unsure=True)})
    ids = {}
    for case_id in ("PL-LINK", "PL-ANYWAY"):
        assert idle.post_case(case_created(case_id)).status_code == 202
        ids[case_id] = _newest_delivery(store)
        receiver.answer("/highways", Answer(504))  # a gateway gave up: the call may have got through, or not
        assert worker.handle(ids[case_id]) == "retrying"
        make_due(store, ids[case_id])
        assert worker.handle(ids[case_id]) == "unconfirmed"
    configuration = idle.broker.configuration
    assert reconcile_unconfirmed(store, configuration)["highways"]["still_waiting"] == 2
    assert reconcile_unconfirmed(store, configuration, settle=timedelta(0)) == {
        "highways": {"found": 0, "to_support_staff": 2, "still_waiting": 0}}
    with store.read() as session:
        failures = {row.delivery_id: row for row in session.scalars(select(FailedMessage))}
    assert {row.reason for row in failures.values()} == {REASON}
    assert {row.error_class for row in failures.values()} == {"unconfirmed"}

    env = broker_env(database_url=idle.settings.database_url, mappings_dir=str(idle.settings.mappings_dir),
                     amqp_url="memory://", amqp_namespace=idle.settings.amqp_namespace)
    link_id, anyway_id = failures[ids["PL-LINK"]].id, failures[ids["PL-ANYWAY"]].id
    shown = run_broker("failed", "show", str(link_id), env=env, cwd=tmp_path)
    assert f"broker failed link {link_id}" in shown.stdout and "--create-anyway" in shown.stdout
    linked = run_broker("failed", "link", str(link_id), "ENQ-77", "--actor", "sam", env=env, cwd=tmp_path)
    assert linked.returncode == 0, linked.stderr
    assert "recorded as ENQ-77" in linked.stdout
    refused = run_broker("failed", "replay", "--reason", REASON, "--create-anyway", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "takes ids" in refused.stdout
    anyway = run_broker("failed", "replay", str(anyway_id), "--create-anyway", "--actor", "sam", env=env,
                        cwd=tmp_path)
    assert anyway.returncode == 0, anyway.stderr

    posts_before, lookups_before = len(receiver.on("/highways")), receiver.lookups
    assert worker.handle(ids["PL-ANYWAY"]) == "delivered"
    assert len(receiver.on("/highways")) == posts_before + 1 and receiver.lookups == lookups_before
    with store.read() as session:
        link, anyway_delivery = (session.get_one(DeliveryRecord, ids[key]) for key in ("PL-LINK", "PL-ANYWAY"))
        steps = {(row.step, row.actor, json.dumps(row.detail, sort_keys=True)) for row in session.scalars(
            select(AuditEntry).where(AuditEntry.step.in_(("linked", "replayed"))))}
    assert (link.state, link.external_ref) == ("delivered", "ENQ-77")
    assert anyway_delivery.state == "delivered"
    assert ("linked", "user:sam", json.dumps({"external_ref": "ENQ-77", "failed_message": link_id},
                                             sort_keys=True)) in steps
    assert ("replayed", "user:sam", json.dumps({"create_anyway": True, "failed_message": anyway_id},
                                               sort_keys=True)) in steps


def test_a_target_that_chose_to_recreate_sends_again(idle: RunningBroker, receiver: WebhookReceiver) -> None:
    store = idle.broker.store
    adapter = webhook(receiver, unsure=True)
    delivery_id = posted_case(idle, "PL-RECREATE")
    dies_inside_the_call(store, adapter, delivery_id)
    worker = DeliveryWorker(store, {"highways": adapter}, worker_id="worker-b",
                            unconfirmed={"highways": UnconfirmedPolicy.recreate})
    assert worker.handle(delivery_id, redelivered=True) == "delivered"
    assert len(receiver.on("/highways")) == 2, "recreate accepts a possible duplicate, knowingly"


def _newest_delivery(store: Store) -> int:
    with store.read() as session:
        return int(session.scalars(select(DeliveryRecord.id).where(DeliveryRecord.target == "highways")
                                   .order_by(DeliveryRecord.id.desc())).first() or 0)


def test_support_staff_link_an_unconfirmed_create_or_create_it_anyway_from_the_console(
        idle: RunningBroker, receiver: WebhookReceiver, unsure_highways: None) -> None:
    store = idle.broker.store
    worker = DeliveryWorker(store, {"highways": webhook(receiver, unsure=True)})
    ids = {}
    for case_id in ("PL-CONSOLE-LINK", "PL-CONSOLE-ANYWAY"):
        assert idle.post_case(case_created(case_id)).status_code == 202
        ids[case_id] = _newest_delivery(store)
        receiver.answer("/highways", Answer(504))
        assert worker.handle(ids[case_id]) == "retrying"
        make_due(store, ids[case_id])
        assert worker.handle(ids[case_id]) == "unconfirmed"
    reconcile_unconfirmed(store, idle.broker.configuration, settle=timedelta(0))
    with store.read() as session:
        failures = {row.delivery_id: row.id for row in session.scalars(select(FailedMessage))}
    link_id, anyway_id = failures[ids["PL-CONSOLE-LINK"]], failures[ids["PL-CONSOLE-ANYWAY"]]
    operator = officer_client(store, idle.base_url, "olga", "operator")
    viewer = officer_client(store, idle.base_url, "vic", "viewer")
    try:
        page = operator.get(f"/console/failed/{link_id}").text
        assert "It may already be in highways" in page and "Create it anyway" in page
        assert "Create it anyway" not in viewer.get(f"/console/failed/{link_id}").text
        assert viewer.post(f"/v1/console/failed/{link_id}/link", json={"external_ref": "ENQ-9"}).status_code == 403
        assert operator.post(f"/v1/console/failed/{link_id}/link", json={"external_ref": ""}).status_code == 422
        linked = operator.post(f"/v1/console/failed/{link_id}/link", json={"external_ref": "ENQ-9"})
        assert linked.status_code == 200 and "recorded as ENQ-9" in linked.json()["outcome"]
        anyway = operator.post(f"/v1/console/failed/{anyway_id}/create-anyway")
        assert anyway.status_code == 200, anyway.text
        again = operator.post(f"/v1/console/failed/{anyway_id}/create-anyway")
        assert again.status_code == 409, "a failed message is acted on once"
    finally:
        operator.close()
        viewer.close()
    posts, lookups = len(receiver.on("/highways")), receiver.lookups
    assert worker.handle(ids["PL-CONSOLE-ANYWAY"]) == "delivered"
    assert (len(receiver.on("/highways")), receiver.lookups) == (posts + 1, lookups)
    with store.read() as session:
        actors = {(row.step, row.actor) for row in session.scalars(
            select(AuditEntry).where(AuditEntry.step.in_(("linked", "replayed"))))}
        linked_delivery = session.get_one(DeliveryRecord, ids["PL-CONSOLE-LINK"])
    assert (linked_delivery.state, linked_delivery.external_ref) == ("delivered", "ENQ-9")
    assert {step for step, actor in actors if "olga" in actor} == {"linked", "replayed"}
