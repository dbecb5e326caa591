"""Batch acknowledgements on RabbitMQ: one ``multiple`` ack where it is safe, never over a deferred message."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Queue
from kombu.message import Message
from support.services import AMQP_URL, pika_connection

from broker.transport.consumer import QueueConsumer


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"cbtest-acks-{uuid.uuid4().hex[:10]}"
    yield name
    connection = pika_connection()
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


def publish(queue_name: str, bodies: list[bytes]) -> None:
    """A sender on another client (pika), publishing persistently with confirms."""
    connection = pika_connection()
    try:
        channel = connection.channel()
        channel.queue_declare(queue_name, durable=True)
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", queue_name, body)
    finally:
        connection.close()


def left_in_queue(queue_name: str) -> list[bytes]:
    """Every message the queue still holds (ready, or unacked by a consumer now gone), taken and acked."""
    connection = pika_connection()
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _, body = channel.basic_get(queue_name, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body)
    finally:
        connection.close()


def run_consumer(queue_name: str, handler: object, until: threading.Event) -> None:
    stop = threading.Event()
    consumer = QueueConsumer("acks", lambda: Connection(AMQP_URL), Queue(queue_name, durable=True),
                             batch_handler=handler, prefetch=50, stop=stop)  # type: ignore[arg-type]
    consumer.start()
    try:
        assert until.wait(30)
        time.sleep(0.3)  # the acks leave after the handler returns
    finally:
        stop.set()
        consumer.join(10)


def test_a_handled_window_is_acknowledged_and_gone(queue_name: str) -> None:
    bodies = [f"m-{n}".encode() for n in range(40)]
    publish(queue_name, bodies)
    seen: list[bytes] = []
    all_seen = threading.Event()

    def handle(messages: list[Message]) -> None:
        seen.extend(message.body for message in messages)
        if len(seen) >= len(bodies):
            all_seen.set()

    run_consumer(queue_name, handle, all_seen)
    assert sorted(seen) == sorted(bodies)
    assert left_in_queue(queue_name) == []


def test_a_deferred_message_stays_unacknowledged_while_later_ones_are_acked(queue_name: str) -> None:
    bodies = [f"m-{n:02d}".encode() for n in range(40)]
    publish(queue_name, bodies)
    seen: list[bytes] = []
    all_seen = threading.Event()

    def handle(messages: list[Message]) -> list[Message]:
        seen.extend(message.body for message in messages)
        if len(set(seen)) >= len(bodies):
            all_seen.set()
        return [message for message in messages if message.body in (b"m-03", b"m-17")]  # held back every time

    run_consumer(queue_name, handle, all_seen)
    # The consumer went away holding the two deferred messages: RabbitMQ has them back, and only them.
    assert sorted(left_in_queue(queue_name)) == [b"m-03", b"m-17"]


def test_a_message_deferred_again_and_again_is_handed_back_after_longer_and_longer_pauses(
        queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery another live worker is still calling the target for is deferred; each pause is twice the last
    (1, 2, 4, 8 s as shipped; half of that here), never more than the longest."""
    import broker.transport.consumer as consumer_module

    monkeypatch.setattr(consumer_module, "DEFER_SECONDS", 0.5)
    monkeypatch.setattr(consumer_module, "MAX_DEFER_SECONDS", 2.0)
    publish(queue_name, [b"held"])
    handed: list[float] = []
    enough = threading.Event()

    def handle(messages: list[Message]) -> list[Message]:
        handed.extend(time.monotonic() for _ in messages)
        if len(handed) >= 6:
            enough.set()
        return list(messages)

    stop = threading.Event()
    consumer = QueueConsumer("defer", lambda: Connection(AMQP_URL), Queue(queue_name, durable=True),
                             batch_handler=handle, prefetch=5, stop=stop)
    consumer.start()
    try:
        assert enough.wait(30)
    finally:
        stop.set()
        consumer.join(10)
    pauses = [later - earlier for earlier, later in itertools.pairwise(handed)]
    # The consumer looks at what it holds back at least every half second: each pause is that much late at most.
    for pause, expected in zip(pauses, [0.5, 1.0, 2.0, 2.0, 2.0], strict=True):
        assert expected - 0.05 <= pause <= expected + 0.6, pauses
