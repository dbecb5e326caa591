"""A message that cannot be processed lands in the failed store with the reason, instead of looping."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu.messaging import Producer
from sqlalchemy import select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import WebhookReceiver
from support.services import AMQP_URL, pika_connection

from broker.config.loader import load_configuration
from broker.failures.poison import PoisonRecorder
from broker.intake.transaction import Intake
from broker.model import AnyEvent, parse_event
from broker.settings import Settings
from broker.store.database import Store
from broker.store.tables import DeliveryRecord, FailedMessage
from broker.transport.connection import connect, topology_for
from broker.transport.consumer import QueueConsumer
from broker.transport.fabric import Fabric, dead_letter_handler


def test_an_unreadable_delivery_pointer_is_recorded_after_a_few_tries(running: RunningBroker,
                                                                       receiver: WebhookReceiver) -> None:
    topology = running.broker.topology
    with running.broker.fabric.connection() as connection:
        Producer(connection.channel()).publish(b"\x00 not a pointer", exchange=topology.delivery_exchange.name,
                                               routing_key="highways", delivery_mode=2)

    def recorded() -> list[FailedMessage]:
        with running.broker.store.read() as session:
            return list(session.scalars(select(FailedMessage)))

    running.wait_until(lambda: len(recorded()) == 1, timeout=60, what="the poison message to be recorded")
    [failed] = recorded()
    assert (failed.stage, failed.error_class, failed.reason) == ("delivery", "poison", "poison_message")
    assert failed.raw_body == b"\x00 not a pointer"
    assert "5 times" in failed.error_text
    # Everything else keeps flowing.
    assert running.post_case(case_created("PM-1")).status_code == 202
    assert running.wait_settled() == {"delivered": 1}


@pytest.fixture
def dead_letter_setup(database_url: str, mappings_dir: Path, namespace: str) -> Iterator[tuple[Settings, Store]]:
    settings = Settings(database_url=database_url, amqp_url=AMQP_URL, amqp_namespace=namespace,
                        mappings_dir=mappings_dir)
    store = Store(database_url)
    store.migrate()
    yield settings, store
    store.dispose()


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
def test_a_message_that_keeps_killing_workers_is_dead_lettered_and_recorded(
    amqp_url: str, dead_letter_setup: tuple[Settings, Store]
) -> None:
    settings, store = dead_letter_setup
    topology = topology_for(settings)
    receipt = Intake(store, load_configuration(settings.mappings_dir)).accept(
        _event(case_created("PM-2")), via="http", actor="system:crm")
    stop = threading.Event()
    recorder = PoisonRecorder(store)
    dead_letters = QueueConsumer("dead-letters", lambda: connect(settings), topology.dead_letter_queue,
                                 handler=dead_letter_handler(Fabric(settings, stop=stop), recorder), prefetch=10,
                                 stop=stop)
    dead_letters.start()
    assert dead_letters.ready.wait(30)
    with connect(settings) as connection:
        channel = connection.channel()
        queue = topology.delivery_queue("highways")(channel)
        queue.declare()
        with store.read() as session:
            delivery_id = session.scalars(select(DeliveryRecord.id)).one()
        Producer(channel).publish({"delivery_id": delivery_id, "target": "highways"},
                                  exchange=topology.delivery_exchange.name, routing_key="highways",
                                  serializer="json", delivery_mode=2)

    # Each "worker" takes the message and dies before acknowledging it (pika, an independent client).
    deliveries = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dying_worker = pika_connection()
        method, _, _ = dying_worker.channel().basic_get(queue.name, auto_ack=False)
        dying_worker.close()
        if method is None:
            break
        deliveries += 1
    assert deliveries == topology.delivery_limit + 1

    def state() -> str:
        with store.read() as session:
            return session.get_one(DeliveryRecord, delivery_id).state

    deadline = time.monotonic() + 30
    while state() != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    dead_letters.join(10)
    assert state() == "failed"
    with store.read() as session:
        failed = session.scalars(select(FailedMessage)).one()
    assert (failed.error_class, failed.reason, failed.case_pk) == ("poison", "poison_message", receipt.case_pk)
    assert f"more than {topology.delivery_limit} times" in failed.error_text


def _event(document: dict[str, object]) -> AnyEvent:
    return parse_event(json.dumps(document).encode())
