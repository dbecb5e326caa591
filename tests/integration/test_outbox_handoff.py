"""Intake hands its delivery pointers to its own process's relay as it commits; no pointer waits on a poll, none
is taken by another process's relay meanwhile, and one whose process died before publishing it is still sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import WebhookReceiver

from broker.model.events import CaseCreated
from broker.runtime.process import Broker
from broker.settings import Settings
from broker.store.tables import DeliveryRecord, OutboxMessage
from broker.transport.pointer import OutboxEntry


def published(how: str) -> float:
    return REGISTRY.get_sample_value("casebridge_pointers_published_total", {"how": how}) or 0.0


def outbox_rows(broker: Broker) -> int:
    with broker.store.read() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


@pytest.fixture
def other_relay(settings: Settings, running: RunningBroker) -> Iterator[Broker]:
    """Another process's relay on the same store and RabbitMQ, looking for rows to take every 0.2 s."""
    other = Broker(settings)
    other.start_relay()
    assert other.wait_ready(30)
    yield other
    other.shutdown()


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_pointers_go_straight_to_the_intakes_own_relay_and_their_rows_are_then_deleted(
        running: RunningBroker, other_relay: Broker, receiver: WebhookReceiver) -> None:
    handed, taken = published("handed"), published("taken")
    cases = [f"HAND-{number:02d}" for number in range(30)]
    for case_id in cases:
        assert running.post_case(case_created(case_id)).status_code == 202
    receiver.wait_for(len(cases), "/highways")
    running.wait_until(lambda: outbox_rows(running.broker) == 0, 10, "the published pointers' rows deleted")
    assert published("handed") - handed == len(cases)
    assert published("taken") - taken == 0  # neither relay found them in the store
    assert sorted(receiver.event_counts("/highways").values()) == [1] * len(cases)
    assert running.wait_settled() == {"delivered": len(cases)}


class DiedBeforePublishing:
    """The relay of a process that was killed right after its intake committed: it never publishes what it was
    handed."""

    def __init__(self) -> None:
        self.handed: list[OutboxEntry] = []

    def accepting(self) -> bool:
        return True

    def hand(self, entries: list[OutboxEntry]) -> None:
        self.handed.extend(entries)


@pytest.mark.parametrize("amqp_url", ["memory", "rabbitmq"], indirect=True)
def test_a_pointer_whose_process_died_before_publishing_it_is_sent_once_its_reservation_lapses(
        settings: Settings, running: RunningBroker, receiver: WebhookReceiver) -> None:
    dying = Broker(settings)
    dead_relay = DiedBeforePublishing()
    dying.intake.handoff = dead_relay
    dying.intake.handoff_reserve_seconds = 2.0
    taken = published("taken")
    receipt = dying.intake.accept(CaseCreated.model_validate(case_created("ORPHAN-1")), via="http", actor="crm")
    assert [entry.body["delivery_id"] for entry in dead_relay.handed] == [
        delivery for delivery, in _deliveries_of(dying, receipt.event_id)]
    with running.broker.store.read() as session:
        reserved_until = session.scalars(select(OutboxMessage.reserved_until)).one()
    assert reserved_until is not None
    # The running relay looks every 0.2 s, and leaves the reserved row alone until the reservation lapses.
    [arrived] = receiver.wait_for(1, "/highways", timeout=15)
    assert arrived.at >= reserved_until.timestamp()
    assert published("taken") - taken == 1
    running.wait_until(lambda: outbox_rows(running.broker) == 0, 10, "the row deleted once published")
    assert running.wait_settled() == {"delivered": 1}
    assert len(receiver.on("/highways")) == 1
    dying.store.dispose()


def _deliveries_of(broker: Broker, event_id: str) -> list[tuple[int]]:
    with broker.store.read() as session:
        return [(row.id,) for row in session.execute(
            select(DeliveryRecord.id).where(DeliveryRecord.event_id == event_id).order_by(DeliveryRecord.id))]
