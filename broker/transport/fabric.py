"""One process's share of the message fabric: the relay and the consumers it runs, wired from the settings.

The rest of the broker hands it plain callables -- intake for inbound envelopes, a delivery worker for pointers,
a recorder for poison messages -- and never sees an exchange, a queue or a kombu message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from kombu.connection import Connection
from kombu.message import Message

from broker.settings import Settings
from broker.store.database import Store
from broker.transport.connection import connect, topology_for
from broker.transport.consumer import QueueConsumer
from broker.transport.pointer import Pointer, read_pointer
from broker.transport.relay import OutboxRelay

#: Handles a window of pointers; returns, per pointer, what became of it ("deferred" ones are handed over again).
PointerHandler = Callable[[Sequence[Pointer]], Sequence[str]]


class PoisonSink(Protocol):
    """Where messages that cannot be processed are recorded (:class:`broker.failures.poison.PoisonRecorder`)."""

    def delivery(self, body: bytes, why: str) -> None: ...

    def intake(self, body: bytes, why: str) -> None: ...


class Fabric:
    def __init__(self, settings: Settings, *, stop: threading.Event,
                 is_outage: Callable[[Exception], bool] = lambda _error: False) -> None:
        self.settings = settings
        self.topology = topology_for(settings)
        self.stop_event = stop
        self.is_outage = is_outage
        self.consumers: list[QueueConsumer] = []

    @property
    def namespace(self) -> str:
        return self.topology.namespace

    def connection(self) -> Connection:
        return connect(self.settings)

    def relay(self, store: Store, targets: Iterable[str], *, every_poll: Callable[[], object] | None = None
              ) -> OutboxRelay:
        """The outbox relay (not started): confirms are pipelined per batch, not waited for one by one."""
        return OutboxRelay(store, lambda: connect(self.settings, confirm=False), self.topology, targets,
                           stop=self.stop_event, poll_seconds=self.settings.outbox_poll_seconds,
                           every_poll=every_poll)

    def consume_intake(self, handle_batch: Callable[[list[Message]], None], poison: PoisonSink) -> None:
        """The inbound envelopes (``<namespace>.inbound``), to the intake's batch handler."""
        self._start("intake", self.topology.inbound_queue, batch_handler=handle_batch,
                    on_poison=lambda message, why: poison.intake(_body(message), why))

    def consume_dead_letters(self, poison: PoisonSink) -> None:
        """Messages RabbitMQ dead-lettered after too many deliveries (quorum queues only)."""
        if self.topology.quorum:
            self._start("dead-letters", self.topology.dead_letter_queue, handler=self._dead_lettered(poison))

    def consume_deliveries(self, target: str, handle: PointerHandler, poison: PoisonSink, *,
                           pause_for: Callable[[], float]) -> None:
        """A target's delivery pointers, a window at a time, to ``handle``; paused while ``pause_for`` says so."""
        def handle_messages(messages: list[Message]) -> list[Message]:
            results = handle([_pointer(message) for message in messages])
            return [message for message, result in zip(messages, results, strict=True) if result == "deferred"]

        self._start(f"deliver-{target}", self.topology.delivery_queue(target), batch_handler=handle_messages,
                    on_poison=lambda message, why: poison.delivery(_body(message), why), pause_for=pause_for)

    def reply_connection(self) -> Connection:
        """For replies to ``reply_to``: publishes wait for no confirm."""
        return connect(self.settings, confirm=False)

    def _start(self, name: str, queue: Any, **handlers: Any) -> None:
        consumer = QueueConsumer(name, self.connection, queue, prefetch=self.settings.prefetch,
                                 stop=self.stop_event, is_outage=self.is_outage, **handlers)
        consumer.start()
        self.consumers.append(consumer)

    def _dead_lettered(self, poison: PoisonSink) -> Callable[[Message], None]:
        delivery_prefix = f"{self.topology.namespace}.deliver."
        limit = self.topology.delivery_limit

        def record(message: Message) -> None:
            """The original queue and the count come from RabbitMQ's headers."""
            headers = message.headers or {}
            deaths = headers.get("x-death") or [{}]
            count = deaths[0].get("count") if isinstance(deaths[0], dict) else None
            why = (f"delivered more than {limit} times without being processed"
                   f"{f' ({count} dead-lettering(s))' if count else ''}; it may crash workers")
            if str(headers.get("x-first-death-queue", "")).startswith(delivery_prefix):
                poison.delivery(_body(message), why)
            else:
                poison.intake(_body(message), why)

        return record


def dead_letter_handler(fabric: Fabric, poison: PoisonSink) -> Callable[[Message], None]:
    """The dead-letter queue's handler, for a consumer started by hand (tests)."""
    return fabric._dead_lettered(poison)


def _body(message: Message) -> bytes:
    return message.body if isinstance(message.body, bytes) else str(message.body).encode()


def _pointer(message: Message) -> Pointer:
    return read_pointer(_body(message), redelivered=bool(message.delivery_info.get("redelivered")))
