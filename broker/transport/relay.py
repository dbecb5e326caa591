"""The outbox relay: publishes the delivery pointers the store has committed to publish, then forgets them.

It alone knows where a target's pointers go: the delivery exchange, routed by the target's name.

Intake writes a delivery and its outbox row in one transaction; the relay publishes a batch of rows, waits for
RabbitMQ to confirm them all, and only then deletes them. A crash in between publishes them again, which the
delivery worker ignores (the delivery is already recorded). So the API keeps accepting cases while RabbitMQ is
away: they wait here.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from kombu.connection import Connection
from sqlalchemy import delete, select
from sqlalchemy.sql.dml import ReturningDelete

from broker.logging import describe_error
from broker.operations.tracing import span
from broker.store.database import Store
from broker.store.deliveries import release_due_retries
from broker.store.tables import OutboxMessage, table
from broker.transport.confirms import Outgoing, PipelinedPublisher
from broker.transport.topology import Topology

log = structlog.get_logger("casebridge.relay")


class OutboxRelay(threading.Thread):
    def __init__(
        self,
        store: Store,
        connection_factory: Callable[[], Connection],
        topology: Topology,
        targets: Iterable[str],
        *,
        stop: threading.Event,
        poll_seconds: float = 1.0,
        batch_size: int = 500,
        every_poll: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(name="outbox-relay", daemon=True)
        self.store = store
        self.connection_factory = connection_factory
        self.topology = topology
        self.targets = sorted(targets)
        self.stop_event = stop
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self._wake = threading.Event()
        self.ready = threading.Event()
        #: When the relay last went round its loop (monotonic): a relay that stops going round is stuck.
        self.last_cycle = time.monotonic()
        self._retries_released_at = float("-inf")
        #: Store housekeeping that runs once a poll beside the due retries (held follow-ups).
        self.every_poll = every_poll
        self._take_batch = _take_batch(batch_size, locking=store.is_postgres)

    def stuck_for(self) -> float | None:
        """Seconds since the relay last published what was due, beyond a generous poll; None while it keeps up
        (or while it is reconnecting to RabbitMQ, which ``ready`` tells)."""
        late = time.monotonic() - self.last_cycle - max(30.0, 10 * self.poll_seconds)
        return late if late > 0 and self.ready.is_set() else None

    def wake(self) -> None:
        """Publish now rather than at the next poll (called after intake commits)."""
        self._wake.set()

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                with self.connection_factory() as connection:
                    connection.ensure_connection(max_retries=1)
                    self._declare(connection)
                    publisher = PipelinedPublisher(connection)
                    self.ready.set()
                    backoff = 0.5
                    while not self.stop_event.is_set():
                        # Cleared before looking: a commit after this either is seen below or wakes the wait.
                        self._wake.clear()
                        self.relay_pending(publisher)
                        self.last_cycle = time.monotonic()
                        self._wake.wait(self.poll_seconds)
            except Exception as exc:
                self.ready.clear()
                log.warning("relay.disconnected", error=describe_error(exc), retry_in=round(backoff, 2))
                self.stop_event.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 30.0)

    def _declare(self, connection: Connection) -> None:
        # Declare every target's queue before publishing, so a pointer is never routed to no queue and dropped.
        channel = connection.channel()
        if self.topology.quorum:  # before any queue that dead-letters to it, or dead letters would be dropped
            self.topology.dead_letter_queue(channel).declare()
        self.topology.delivery_exchange(channel).declare()
        for target in self.targets:
            self.topology.delivery_queue(target)(channel).declare()
        channel.close()

    def relay_pending(self, publisher: PipelinedPublisher) -> int:
        """Publish every committed outbox message; returns how many were published."""
        published = 0
        # Every poll, not on every wake: intake wakes the relay after each commit, and a retry's time is
        # kept to within a poll either way.
        if time.monotonic() - self._retries_released_at >= self.poll_seconds:
            release_due_retries(self.store)
            if self.every_poll is not None:
                self.every_poll()
            self._retries_released_at = time.monotonic()
        while not self.stop_event.is_set():
            with self.store.transaction() as session:
                batch = sorted(session.connection().execute(self._take_batch).all(), key=lambda row: int(row.id))
                if not batch:
                    return published
                # A short batch took all there was when the statement ran; what commits later wakes the relay
                # again (no empty transaction after every wake to make sure).
                drained = len(batch) < self.batch_size
                # Each target's pointers go to its own delivery queue, bound by the target's name.
                exchange = self.topology.delivery_exchange.name
                with span("casebridge.relay.publish", pointers=len(batch),
                          targets=sorted({row.target for row in batch})):
                    publisher.publish_all(Outgoing(row.body, exchange, row.target) for row in batch)
            published += len(batch)
            log.debug("relay.published", count=len(batch))
            if drained:
                return published
        return published


def _take_batch(size: int, *, locking: bool) -> ReturningDelete[Any, Any, Any]:
    """The oldest ``size`` outbox messages, taken and deleted in one statement (the deletion only counts once
    every message is confirmed). Built once: the relay runs it after every commit of the API's."""
    outbox = table(OutboxMessage)
    oldest = select(outbox.c.id).order_by(outbox.c.id).limit(size)
    if locking:
        oldest = oldest.with_for_update(skip_locked=True)
    return delete(outbox).where(outbox.c.id.in_(oldest.scalar_subquery())).returning(
        outbox.c.id, outbox.c.target, outbox.c.body)
