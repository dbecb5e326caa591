"""Publishing a batch with publisher confirms pipelined: send every message, then wait once for all the acks.

Waiting for each confirm in turn costs a round trip per message; RabbitMQ confirms a batch as fast as it can
write it. A batch counts as published only when every message in it is confirmed; a negative acknowledgement or
a timeout raises, and the caller publishes the whole batch again (its consumers ignore copies).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import amqp
from kombu.connection import Connection
from kombu.messaging import Producer


class PublishNotConfirmed(Exception):
    """RabbitMQ refused a message of the batch, or did not confirm it in time."""


@dataclass(frozen=True)
class Outgoing:
    body: dict[str, Any]
    exchange: str
    routing_key: str


class PipelinedPublisher:
    """Publishes persistent JSON messages on one channel of ``connection``.

    On RabbitMQ the channel is put in confirm mode and :meth:`publish_all` returns once the broker has confirmed
    every message; the in-process memory transport has nothing to confirm. Give it a connection made without
    kombu's ``confirm_publish`` option, which would wait for each message in turn.
    """

    def __init__(self, connection: Connection, *, timeout: float = 30.0) -> None:
        self.connection = connection
        self.timeout = timeout
        channel = connection.channel()
        self.channel = channel
        self.producer = Producer(channel)
        self.confirming = connection.transport.driver_type == "amqp"
        self._next_tag = 1  # RabbitMQ numbers a confirming channel's publishes from 1
        self._unconfirmed: set[int] = set()
        self._refused = False
        if self.confirming:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._acked)
            channel.events["basic_nack"].add(self._nacked)

    def publish_all(self, messages: Iterable[Outgoing]) -> int:
        """Publish the messages; returns how many, once all are confirmed."""
        count = 0
        for message in messages:
            if self.confirming:
                self._publish_on_amqp_channel(message)
                self._unconfirmed.add(self._next_tag)
                self._next_tag += 1
            else:
                self.producer.publish(message.body, exchange=message.exchange, routing_key=message.routing_key,
                                      serializer="json", delivery_mode=2, retry=False)
            count += 1
        self._wait_for_confirms()
        return count

    def _publish_on_amqp_channel(self, message: Outgoing) -> None:
        """The message as kombu's producer would frame it (persistent, JSON, UTF-8), published straight on the
        py-amqp channel: the producer's per-message preparation cost more than the publish itself."""
        body = json.dumps(message.body, separators=(",", ":")).encode()
        self.channel.basic_publish(
            amqp.Message(body, content_type="application/json", content_encoding="utf-8", delivery_mode=2),
            exchange=message.exchange, routing_key=message.routing_key,
        )

    def _wait_for_confirms(self) -> None:
        deadline = time.monotonic() + self.timeout
        while self._unconfirmed and not self._refused:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishNotConfirmed(f"{len(self._unconfirmed)} message(s) not confirmed in {self.timeout}s")
            self.connection.drain_events(timeout=min(remaining, 1.0))
        if self._refused:
            raise PublishNotConfirmed("RabbitMQ refused (nacked) a message of the batch")

    def _acked(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _nacked(self, delivery_tag: int, multiple: bool) -> None:
        self._refused = True
        self._settle(delivery_tag, multiple)

    def _settle(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)
