"""AMQP intake against publishers that claim to be someone else, answer into our own queues, or send NULs.

Each publisher is a real RabbitMQ account (made with rabbitmqctl for the test, deleted after it) using pika.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from sqlalchemy import select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import WebhookReceiver
from support.services import AMQP_URL, AMQP_USER, pika_connection, postgres_database

from broker.store.tables import CaseRecord, FailedMessage

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def accounts() -> Iterator[Callable[[], tuple[str, str]]]:
    """Makes RabbitMQ accounts (name, password) with full rights on the default virtual host; deletes them after."""
    made: list[str] = []

    def make() -> tuple[str, str]:
        name, password = f"cbtest-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        subprocess.run(["rabbitmqctl", "-q", "add_user", name, password], check=True, capture_output=True)
        made.append(name)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", "/", name, ".*", ".*", ".*"], check=True,
                       capture_output=True)
        return name, password

    yield make
    for name in made:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", name], check=False, capture_output=True)


def connect_as(name: str, password: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, "/",
                                                             pika.PlainCredentials(name, password)))


def publish(connection: pika.BlockingConnection, running: RunningBroker, body: dict[str, Any], **properties: Any
            ) -> None:
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(running.broker.topology.inbound_exchange.name, body["event_type"],
                          json.dumps(body).encode(),
                          pika.BasicProperties(content_type="application/json", delivery_mode=2, **properties))
    channel.close()


def failures(running: RunningBroker) -> list[FailedMessage]:
    with running.broker.store.read() as session:
        return list(session.scalars(select(FailedMessage).order_by(FailedMessage.id)))


def case_ids(running: RunningBroker) -> set[str]:
    with running.broker.store.read() as session:
        return set(session.scalars(select(CaseRecord.case_id)))


def test_each_amqp_account_may_publish_only_as_its_own_systems(
        broker_with: Callable[..., RunningBroker], accounts: Callable[[], tuple[str, str]]) -> None:
    (portal, portal_password), (stranger, stranger_password) = accounts(), accounts()
    running = broker_with(amqp_url=AMQP_URL, amqp_publishers={portal: ["portal"]})
    as_portal = connect_as(portal, portal_password)
    publish(as_portal, running, case_created("BIND-1", source="portal"), user_id=portal)
    publish(as_portal, running, case_created("BIND-2", source="confirm"), user_id=portal)
    publish(as_portal, running, case_created("BIND-3", source="portal"))  # no user_id: the account is unknown
    as_stranger = connect_as(stranger, stranger_password)
    publish(as_stranger, running, case_created("BIND-4", source="crm"), user_id=stranger)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as forged:  # RabbitMQ checks user_id itself
        publish(as_stranger, running, case_created("BIND-5", source="portal"), user_id=portal)
    assert forged.value.reply_code == 406
    publish(pika_connection(), running, case_created("BIND-6", source="crm"), user_id=AMQP_USER)  # the broker's own
    running.wait_until(lambda: len(failures(running)) == 3 and len(case_ids(running)) == 2, what="the outcomes")
    assert case_ids(running) == {"BIND-1", "BIND-6"}
    refused = failures(running)
    assert {failure.reason for failure in refused} == {"publisher_not_allowed"}
    texts = sorted(failure.error_text for failure in refused)
    assert texts == sorted([f"AMQP account {portal!r} may publish as portal, not as 'confirm'",
                            "the message has no user_id property, so the account that published it is unknown: "
                            "set user_id to the publishing account's name",
                            f"AMQP account {stranger!r} may publish as {stranger}, not as 'crm'"])
    as_portal.close()
    as_stranger.close()


def test_a_reply_is_never_published_into_one_of_our_queues(
        broker_with: Callable[..., RunningBroker], receiver: WebhookReceiver) -> None:
    running = broker_with(amqp_url=AMQP_URL)
    delivery_queue = running.broker.topology.delivery_queue("highways").name
    connection = pika_connection()
    channel = connection.channel()
    # A queue of the namespace that nothing consumes: a reply published into it would stay there to be counted.
    idle = f"{running.settings.amqp_namespace}.idle-probe"
    channel.queue_declare(idle, auto_delete=False)
    replies: list[dict[str, Any]] = []
    channel.basic_consume("amq.rabbitmq.reply-to", lambda _ch, _m, _p, body: replies.append(json.loads(body)),
                          auto_ack=True)
    channel.basic_publish(running.broker.topology.inbound_exchange.name, "case.created",
                          json.dumps(case_created("REPLY-1")).encode(),
                          pika.BasicProperties(content_type="application/json", user_id=AMQP_USER,
                                               reply_to=delivery_queue))
    channel.basic_publish(running.broker.topology.inbound_exchange.name, "case.created",
                          json.dumps(case_created("REPLY-3")).encode(),
                          pika.BasicProperties(content_type="application/json", user_id=AMQP_USER, reply_to=idle))
    channel.basic_publish(running.broker.topology.inbound_exchange.name, "case.created",
                          json.dumps(case_created("REPLY-2")).encode(),
                          pika.BasicProperties(content_type="application/json", user_id=AMQP_USER,
                                               reply_to="amq.rabbitmq.reply-to"))
    deadline = time.monotonic() + 15
    while not replies and time.monotonic() < deadline:
        connection.process_data_events(0.1)
    assert replies and replies[0]["case_id"] == "REPLY-2"  # direct reply-to is answered
    try:
        receiver.wait_for(3, "/highways")
        running.wait_settled()
        assert running.delivery_states() == {"delivered": 3}
        assert channel.queue_declare(idle, passive=True).method.message_count == 0  # no reply was put there
        time.sleep(3)  # a reply fed to the highways consumer would fail it, and be retried, by now
        assert failures(running) == []
        assert channel.queue_declare(delivery_queue, passive=True).method.message_count == 0
    finally:
        channel.queue_delete(idle)
        connection.close()


def test_nul_characters_over_amqp_on_postgresql_are_refused_with_the_field_named(
        broker_with: Callable[..., RunningBroker], capfd: pytest.CaptureFixture[str]) -> None:
    with postgres_database() as url:
        running = broker_with(amqp_url=AMQP_URL, database_url=url)
        body = case_created("NUL-AMQP")
        body["case"]["reporter"]["person"]["name"] = "Ada\u0000Lovelace"
        body["case"]["description"] = "Outside 12 Acacia Avenue\u0000"
        publish(pika_connection(), running, body, user_id=AMQP_USER)
        running.wait_until(lambda: len(failures(running)) == 1, what="the refusal")
        time.sleep(1)  # a poison loop would record more, or log the handler's error
        [failed] = failures(running)
        assert failed.reason == "invalid_envelope" and failed.error_class != "poison"
        assert failed.error_text.count("holds a NUL character") == 2
        assert "case.description" in failed.error_text and "case.reporter.person.person.name" in failed.error_text
        assert "Lovelace" not in failed.error_text and "Acacia" not in failed.error_text
        running.stop()
    printed = capfd.readouterr()
    assert "Lovelace" not in printed.out + printed.err
    assert "handler_error" not in printed.out + printed.err and "message.poison" not in printed.out + printed.err
