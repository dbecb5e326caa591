"""AMQP intake: a CRM publishes canonical envelopes to the inbound topic exchange.

On RabbitMQ the CRM is played by pika, an AMQP client independent of our kombu stack, so the contract is proven
against another implementation; on the in-process transport by a plain kombu producer.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pika
import pytest
from kombu import Connection, Producer
from sqlalchemy import select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import WebhookReceiver
from support.services import AMQP_USER, pika_connection

from broker.store.tables import FailedMessage


class Crm:
    """Publishes to ``<namespace>.inbound`` the way an external system would, and reads replies."""

    def __init__(self, running: RunningBroker) -> None:
        self.running = running
        self.exchange = running.broker.topology.inbound_exchange.name
        self.rabbitmq = running.settings.uses_rabbitmq
        if self.rabbitmq:
            self.connection = pika_connection()
            self.channel = self.connection.channel()
            self.channel.confirm_delivery()
            self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        else:
            self.kombu = Connection("memory://")
            self.producer = Producer(self.kombu.channel())

    def publish(self, body: bytes | dict[str, Any], routing_key: str, *, reply: bool = False) -> str:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        correlation = str(uuid.uuid4())
        if self.rabbitmq:
            self.channel.basic_publish(
                self.exchange, routing_key, raw,
                pika.BasicProperties(content_type="application/json", delivery_mode=2, correlation_id=correlation,
                                     reply_to=self.reply_queue if reply else None, user_id=AMQP_USER),
                mandatory=True,
            )
        else:
            self.producer.publish(raw, exchange=self.exchange, routing_key=routing_key,
                                  content_type="application/json", content_encoding="binary")
        return correlation

    def reply(self, correlation: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(self.reply_queue, auto_ack=True)
            if method is not None and properties.correlation_id == correlation:
                result: dict[str, Any] = json.loads(body)
                return result
            self.connection.sleep(0.05)
        raise AssertionError("no reply")

    def intake_queue_depth(self) -> int:
        queue = self.running.broker.topology.inbound_queue.name
        depth: int = self.channel.queue_declare(queue, passive=True).method.message_count
        return depth

    def close(self) -> None:
        if self.rabbitmq:
            self.connection.close()
        else:
            self.kombu.release()


def failed_messages(running: RunningBroker) -> list[FailedMessage]:
    with running.broker.store.read() as session:
        return list(session.scalars(select(FailedMessage).order_by(FailedMessage.id)))


def test_published_case_is_processed_like_an_http_one(running: RunningBroker, receiver: WebhookReceiver) -> None:
    crm = Crm(running)
    try:
        body = case_created("AM-1")
        crm.publish(body, "case.created")
        [delivered] = receiver.wait_for(1, "/highways")
        assert delivered.body["event"]["event_id"] == body["event_id"]
        running.wait_settled()
        history = running.client.get("/v1/cases/AM-1/history").json()["entries"]
        assert [entry["step"] for entry in history] == ["received", "validated", "routed", "delivered"]
        assert history[0]["detail"]["via"] == "amqp"
        # The same envelope again is the same event: no second delivery.
        crm.publish(body, "case.created")
        running.wait_until(lambda: crm.intake_queue_depth() == 0 if crm.rabbitmq else True, 10, "intake drained")
        time.sleep(0.5)
        assert receiver.event_counts("/highways") == {body["event_id"]: 1}
    finally:
        crm.close()


def test_bad_messages_are_recorded_acked_and_do_not_stop_the_flow(running: RunningBroker,
                                                                   receiver: WebhookReceiver) -> None:
    crm = Crm(running)
    try:
        not_json = b"<xml>not json</xml>"
        crm.publish(not_json, "case.created")
        invalid = case_created("AM-2")
        invalid["case"]["location"] = {}
        crm.publish(invalid, "case.created")
        mismatched = case_created("AM-3")
        crm.publish(mismatched, "case.updated")
        unknown_service = case_created("AM-4", service_code="highways.unicorn")
        crm.publish(unknown_service, "case.created")
        good = case_created("AM-5")
        crm.publish(good, "case.created")

        [delivered] = receiver.wait_for(1, "/highways")
        assert delivered.body["event"]["case"]["case_id"] == "AM-5"
        running.wait_until(lambda: len(failed_messages(running)) == 4, 15, "four refusals recorded")
        failures = failed_messages(running)
        assert [(f.stage, f.error_class, f.reason) for f in failures] == [
            ("intake", "invalid", "invalid_json"),
            ("intake", "invalid", "invalid_envelope"),
            ("intake", "invalid", "routing_key_mismatch"),
            ("intake", "invalid", "rejected"),
        ]
        assert failures[0].raw_body == not_json
        assert failures[0].event_id is None
        assert "case.location" in failures[1].error_text
        assert failures[1].event_id == invalid["event_id"]
        assert "case.updated" in failures[2].error_text
        assert "highways.unicorn" in failures[3].error_text
        if crm.rabbitmq:
            assert crm.intake_queue_depth() == 0, "refused messages must be acked, not requeued"
    finally:
        crm.close()


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
def test_reply_to_gets_a_receipt_or_the_reason(running: RunningBroker) -> None:
    crm = Crm(running)
    try:
        body = case_created("AM-6")
        receipt = crm.reply(crm.publish(body, "case.created", reply=True))
        assert receipt == {"accepted": True, "duplicate": False, "case_id": "AM-6", "event_id": body["event_id"],
                           "held": False}
        duplicate = crm.reply(crm.publish(body, "case.created", reply=True))
        assert duplicate["duplicate"] is True
        refusal = crm.reply(crm.publish(b"{", "case.created", reply=True))
        assert refusal["accepted"] is False
        assert refusal["reason"] == "invalid_json"
        invalid = case_created("AM-7")
        invalid["case"]["channel"] = "fax"
        refusal = crm.reply(crm.publish(invalid, "case.created", reply=True))
        assert refusal["reason"] == "invalid_envelope"
        assert [error["field"] for error in refusal["errors"]] == ["case.channel"]
    finally:
        crm.close()
