"""Names and shapes of every exchange and queue, in one place (the AsyncAPI document describes the same)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kombu.entity import Exchange, Queue


@dataclass(frozen=True)
class Topology:
    namespace: str = "casebridge"
    quorum: bool = True
    #: Deliveries of one message (first + redeliveries) before RabbitMQ dead-letters it.
    delivery_limit: int = 10

    @property
    def inbound_exchange(self) -> Exchange:
        """Where CRMs and portals publish canonical envelopes; routing key = event type."""
        return Exchange(f"{self.namespace}.inbound", type="topic", durable=True)

    @property
    def inbound_queue(self) -> Queue:
        """Taken by one consumer at a time (RabbitMQ's single active consumer), the others standing by: events
        are taken in in the order their senders published them, whichever worker is up."""
        arguments = self._queue_arguments()
        if self.quorum:
            arguments["x-single-active-consumer"] = True
        return Queue(
            f"{self.namespace}.intake", self.inbound_exchange, routing_key="case.#", durable=True,
            queue_arguments=arguments,
        )

    @property
    def delivery_exchange(self) -> Exchange:
        """Internal: pointers to deliveries, routed by target name."""
        return Exchange(f"{self.namespace}.deliver", type="direct", durable=True)

    def delivery_queue(self, target: str) -> Queue:
        """One queue per target, so one slow LOB system never holds up another."""
        return Queue(
            f"{self.namespace}.deliver.{target}", self.delivery_exchange, routing_key=target, durable=True,
            queue_arguments=self._queue_arguments(),
        )

    @property
    def dead_letter_exchange(self) -> Exchange:
        """Where RabbitMQ moves a message delivered more than ``delivery_limit`` times (it keeps killing workers)."""
        return Exchange(f"{self.namespace}.dead", type="fanout", durable=True)

    @property
    def dead_letter_queue(self) -> Queue:
        return Queue(f"{self.namespace}.dead-letters", self.dead_letter_exchange, durable=True,
                     queue_arguments={"x-queue-type": "quorum"} if self.quorum else {})

    def _queue_arguments(self) -> dict[str, Any]:
        if not self.quorum:
            return {}
        return {"x-queue-type": "quorum", "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead_letter_exchange.name}
