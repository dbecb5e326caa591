"""A queue consumer on its own thread and connection: reconnects with backoff, acks only after the handler."""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence

import structlog
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

from broker.logging import describe_error, safe_exception_text

log = structlog.get_logger("casebridge.transport")

Handler = Callable[[Message], None]
#: Handles a batch; may return messages it cannot settle yet, to be handed to it again later (unacknowledged).
BatchHandler = Callable[[list[Message]], Sequence[Message] | None]
PoisonHandler = Callable[[Message, str], None]

#: How long a batching consumer waits for more messages before handling what it holds.
BATCH_LINGER_SECONDS = 0.005
#: How long a message the batch handler deferred is kept back before it is handed over again: twice as long each
#: time the same message is deferred again, up to ``MAX_DEFER_SECONDS``.
DEFER_SECONDS = 1.0
MAX_DEFER_SECONDS = 8.0


class QueueConsumer(threading.Thread):
    """Consumes one queue. The handler records the outcome in the store; only then is the message acked.

    When the handler fails because the store is unreachable (``is_outage``), the consumer keeps the messages
    and tries again with backoff until the store is back: nothing is lost, and an outage does not count against
    a message. Any other failure returns the message to the queue after a pause; a message that fails
    ``poison_after`` times in this consumer (or, on RabbitMQ, is delivered more often than the queue's delivery
    limit, e.g. because it kills workers) is handed to ``on_poison`` to be recorded as failed, and acked —
    instead of looping for ever.

    ``pause_for`` (seconds, 0 to go on) lets the owner stop the consumer taking messages for a while.

    With ``batch_handler`` the consumer hands over every message that has arrived (up to the prefetch window)
    in one call, once no more arrive within a few milliseconds; all are acked after it returns, except those it
    returns as deferred: they stay unacknowledged (so they survive this consumer) and are handed over again a
    moment later. If a batch fails, its messages are retried one by one, so one bad message never holds back the
    others.
    """

    def __init__(
        self,
        name: str,
        connection_factory: Callable[[], Connection],
        queue: Queue,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        prefetch: int,
        stop: threading.Event,
        declare: Callable[[Connection], None] | None = None,
        is_outage: Callable[[Exception], bool] = lambda _exc: False,
        on_poison: PoisonHandler | None = None,
        poison_after: int = 5,
        pause_for: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.connection_factory = connection_factory
        self.queue = queue
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self.handler = handler
        self.batch_handler = batch_handler
        self._held: list[Message] = []
        self._deferred: list[tuple[float, Message]] = []
        #: How often each message still held back has been deferred (by the message object's identity).
        self._deferrals: dict[int, int] = {}
        self.prefetch = prefetch
        self.stop_event = stop
        self.declare = declare
        self.is_outage = is_outage
        self.on_poison = on_poison
        self.poison_after = poison_after
        self.pause_for = pause_for
        self._failures: dict[str, int] = {}
        self._connection: Connection | None = None
        self.ready = threading.Event()
        self.failure_pause = 1.0

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                self._consume()
                backoff = 0.5
            except Exception as exc:  # connection lost or refused: reconnect with jittered backoff
                self.ready.clear()
                log.warning("consumer.disconnected", queue=self.queue.name, error=describe_error(exc),
                            retry_in=round(backoff, 2))
                self.stop_event.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 30.0)

    def _consume(self) -> None:
        with self.connection_factory() as connection:
            connection.ensure_connection(max_retries=1)
            self._connection = connection
            channel = connection.channel()
            if self.declare is not None:
                self.declare(connection)
            queue = self.queue(channel)
            queue.declare()
            on_message = self._hold if self.batch_handler is not None else self._on_message
            consumer = Consumer(channel, [queue], on_message=on_message, prefetch_count=self.prefetch,
                                auto_declare=False)
            self._held, self._deferred = [], []  # unacked messages of a lost channel are redelivered anyway
            self._deferrals = {}
            with consumer:
                self.ready.set()
                log.info("consumer.started", queue=self.queue.name, prefetch=self.prefetch)
                while not self.stop_event.is_set():
                    self._take_back_due_deferred()
                    paused = self.pause_for() if self.pause_for and not self._held else 0.0
                    if paused > 0:  # e.g. the target's circuit is open: leave the messages in the queue
                        self._pause(min(paused, 1.0))
                        continue
                    try:
                        connection.drain_events(timeout=BATCH_LINGER_SECONDS if self._held else 0.5)
                    except TimeoutError:
                        if self._held:
                            self._handle_held()
                        else:
                            connection.heartbeat_check()
                        continue
                    if len(self._held) >= self.prefetch:
                        self._handle_held()
                if self._held:
                    self._handle_held()

    def _take_back_due_deferred(self) -> None:
        now = time.monotonic()
        if any(due <= now for due, _ in self._deferred):
            self._held.extend(message for due, message in self._deferred if due <= now)
            self._deferred = [(due, message) for due, message in self._deferred if due > now]

    def _on_message(self, message: Message) -> None:
        self._process([message])

    def _hold(self, message: Message) -> None:
        self._held.append(message)

    def _handle_held(self) -> None:
        batch, self._held = self._held, []
        self._process(batch)

    def _call(self, messages: list[Message]) -> Sequence[Message]:
        """Handle the messages; returns those deferred."""
        if self.batch_handler is not None:
            return self.batch_handler(messages) or ()
        assert self.handler is not None and len(messages) == 1
        self.handler(messages[0])
        return ()

    def _process(self, messages: list[Message]) -> None:
        backoff = self.failure_pause
        while True:
            try:
                deferred = self._call(messages)
            except Exception as exc:
                if self.is_outage(exc) and not self.stop_event.is_set():
                    log.warning("consumer.store_unavailable", queue=self.queue.name, messages=len(messages),
                                error=describe_error(exc), retry_in=round(backoff, 2))
                    self._pause(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                self._handler_failed(messages, exc)
                return
            kept_back = {id(message) for message in deferred}
            now = time.monotonic()
            for message in messages:
                if id(message) in kept_back:
                    times = self._deferrals[id(message)] = self._deferrals.get(id(message), 0) + 1
                    self._deferred.append((now + min(DEFER_SECONDS * 2 ** (times - 1), MAX_DEFER_SECONDS), message))
            done = [message for message in messages if id(message) not in kept_back]
            for message in done:
                self._deferrals.pop(id(message), None)
            if self._failures:
                for message in done:
                    self._failures.pop(_key(message), None)
            self._acknowledge(done)
            return

    def _acknowledge(self, done: list[Message]) -> None:
        """Ack the handled messages: with one ``multiple`` ack on RabbitMQ when no message still unacked on the
        channel (deferred, or held for the next batch) has an earlier delivery tag, else one by one."""
        if not done:
            return
        # Only RabbitMQ numbers delivery tags (the in-process transport's are opaque) and honours ``multiple``.
        if len(done) > 1 and self._connection is not None and self._connection.transport.driver_type == "amqp":
            last = max(done, key=lambda message: int(message.delivery_tag))
            still_open = [message for _, message in self._deferred] + self._held
            if all(int(message.delivery_tag) > int(last.delivery_tag) for message in still_open):
                last.ack(multiple=True)
                return
        for message in done:
            message.ack()

    def _handler_failed(self, messages: list[Message], exc: Exception) -> None:
        if len(messages) > 1 and not self.stop_event.is_set():
            for message in messages:  # find the one that fails; the others go through
                self._process([message])
            return
        log.error("consumer.handler_error", queue=self.queue.name, error=describe_error(exc),
                  messages=len(messages))
        for message in messages:
            failures = self._failures[_key(message)] = self._failures.get(_key(message), 0) + 1
            if self.on_poison is not None and failures >= self.poison_after and self._record_poison(
                message, f"processing failed {failures} times; last error {safe_exception_text(exc)}"
            ):
                continue
            self._pause(self.failure_pause)
            message.requeue()

    def _record_poison(self, message: Message, reason: str) -> bool:
        assert self.on_poison is not None
        try:
            self.on_poison(message, reason)
        except Exception as exc:
            log.error("consumer.poison_not_recorded", queue=self.queue.name, error=describe_error(exc))
            return False
        self._failures.pop(_key(message), None)
        message.ack()
        return True

    def _pause(self, seconds: float) -> None:
        """Wait without letting the broker think this connection is dead."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            self.stop_event.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.heartbeat_check()


def _key(message: Message) -> str:
    """Identifies a message across redeliveries to this consumer."""
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    return hashlib.sha256(body).hexdigest()
