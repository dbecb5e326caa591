"""Inputs that must fail cleanly, alone, while everything around them keeps flowing."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import pika
import pytest
from pydantic import BaseModel
from sqlalchemy import select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import WebhookReceiver
from support.services import AMQP_USER, pika_connection

from broker.config.models import RetryPolicy
from broker.delivery.worker import DeliveryWorker
from broker.plugins.contract import Adapter, Capability, DeliveryOutcome, DeliveryRequest
from broker.store.tables import DeliveryRecord, FailedMessage


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
def test_one_bad_case_in_a_batch_of_good_ones_fails_alone(running: RunningBroker,
                                                          receiver: WebhookReceiver) -> None:
    good = [case_created(f"MIX-{n:03d}") for n in range(60)]
    unmapped = case_created("MIX-BAD", service_code="highways.blocked_drain")  # no code at this target
    invalid = {**case_created("MIX-INVALID"), "occurred_at": "last Tuesday"}
    messages = [*good[:30], unmapped, invalid, good[5], *good[30:]]  # good[5] twice: a duplicate event_id
    connection = pika_connection()
    channel = connection.channel()
    channel.confirm_delivery()
    for document in messages:
        channel.basic_publish(f"{running.settings.amqp_namespace}.inbound", "case.created",
                              json.dumps(document).encode(),
                              pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                   user_id=AMQP_USER))
    connection.close()

    running.wait_until(lambda: running.delivery_states() == {"delivered": 60, "failed": 1}, timeout=60,
                       what="the batch to settle")
    assert set(receiver.event_counts("/highways").values()) == {1}
    assert len(receiver.event_counts("/highways")) == 60
    with running.broker.store.read() as session:
        failures = {(f.stage, f.reason) for f in session.scalars(select(FailedMessage))}
    assert failures == {("delivery", "unmapped_service_code"), ("intake", "invalid_envelope")}


class NoSettings(BaseModel):
    pass


class ExplodingAdapter(Adapter[NoSettings]):
    """An adapter with a bug: it raises something it does not classify."""

    config_model: ClassVar[type[BaseModel]] = NoSettings
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.create})
    calls = 0

    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        ExplodingAdapter.calls += 1
        raise RuntimeError("list index out of range")


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_an_adapter_bug_is_retried_a_few_times_then_failed_with_the_error(running: RunningBroker) -> None:
    running.broker.shutdown()  # this test plays the worker itself, with the faulty adapter
    ExplodingAdapter.calls = 0
    running.post_case(case_created("BUG-1"))
    with running.broker.store.read() as session:
        delivery_id = session.scalars(select(DeliveryRecord.id)).one()
    worker = DeliveryWorker(running.broker.store, {"highways": ExplodingAdapter("highways", NoSettings(), {})},
                            policies={"highways": RetryPolicy(delays_seconds=[0.05], jitter=0)}, quick_retries=0)
    outcomes: list[Any] = []
    for _ in range(10):
        outcomes.append(worker.handle(delivery_id))
        if outcomes[-1] == "failed":
            break
        time.sleep(0.1)
    assert outcomes == ["retrying", "retrying", "failed"]
    with running.broker.store.read() as session:
        failed = session.scalars(select(FailedMessage)).one()
    assert (failed.error_class, failed.reason) == ("unexpected", "unexpected_error")
    assert "RuntimeError: list index out of range" in failed.error_text
    assert ExplodingAdapter.calls == 3
