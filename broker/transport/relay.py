"""The outbox relay: publishes the delivery pointers the store has committed to publish, then forgets them.

It alone knows where a target's pointers go: the delivery exchange, routed by the target's name.

Intake writes a delivery and its outbox row in one transaction; the relay publishes a batch of rows, waits for
RabbitMQ to confirm them all, and only then deletes them. A crash in between publishes them again, which the
delivery worker ignores (the delivery is already recorded). So the API keeps accepting cases while RabbitMQ is
away: they wait here.

Intake in the relay's own process does not leave its rows to be found: it reserves them for a few seconds and
hands them over as its transaction commits (:meth:`OutboxRelay.hand`). The relay publishes them at once, and
deletes what RabbitMQ confirmed a few hundred milliseconds' worth at a time, in a transaction that does not
wait for its commit to reach the disk (losing that deletion in a crash only publishes the pointers again). So the
common path costs no transaction of its own per commit, and the relays of other processes do not look at those
rows. If the process dies before its relay has published them, any relay takes them once the reservation lapses.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from kombu.connection import Connection
from sqlalchemy import Delete, bindparam, delete, or_, select, text
from sqlalchemy.sql.dml import ReturningDelete

from broker.logging import describe_error
from broker.model.events import utc_now
from broker.operations import metrics
from broker.operations.tracing import span
from broker.store.bulk import in_list
from broker.store.database import Store
from broker.store.deliveries import release_due_retries
from broker.store.tables import OutboxMessage, table
from broker.transport.confirms import Outgoing, PipelinedPublisher
from broker.transport.pointer import OutboxEntry
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
        forget_seconds: float = 0.25,
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
        self._forget = _forget(postgres=store.is_postgres)
        #: Entries handed over by this process's intake, waiting to be published (appended from other threads).
        self._handed: collections.deque[OutboxEntry] = collections.deque()
        #: Published and confirmed, their rows not yet deleted: at most every ``forget_seconds``, in one statement.
        self._published_ids: list[int] = []
        self.forget_seconds = forget_seconds
        self._forgotten_at = time.monotonic()
        #: Rows were committed for any relay to take (a wake), or the poll is due: look in the store.
        self._take_due = True
        self._taken_at = float("-inf")

    def stuck_for(self) -> float | None:
        """Seconds since the relay last published what was due, beyond a generous poll; None while it keeps up
        (or while it is reconnecting to RabbitMQ, which ``ready`` tells)."""
        late = time.monotonic() - self.last_cycle - max(30.0, 10 * self.poll_seconds)
        return late if late > 0 and self.ready.is_set() else None

    def wake(self) -> None:
        """Publish what was committed to the outbox now rather than at the next poll."""
        self._take_due = True
        self._wake.set()

    def accepting(self) -> bool:
        return self.ready.is_set()

    def hand(self, entries: list[OutboxEntry]) -> None:
        """Publish these just-committed entries now; their rows are reserved for this relay meanwhile.

        While the relay is not connected they are left to the store: once their reservation lapses, any relay
        takes them. Those handed before a lost connection are published once it is back.
        """
        if self.accepting():
            self._handed.extend(entries)
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
                        self._cycle(publisher)
                        self.last_cycle = time.monotonic()
                        self._wake.wait(self._until_next_cycle())
                    self._forget_published()
            except Exception as exc:
                self.ready.clear()  # what was handed and not yet published is published once connected again
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

    def _cycle(self, publisher: PipelinedPublisher) -> None:
        """Publish what was handed over; look in the store when told to or when the poll is due; delete what
        was published and confirmed once enough time has gathered enough of it."""
        self._publish_handed(publisher)
        if self._take_due or time.monotonic() - self._taken_at >= self.poll_seconds:
            self._take_due = False  # before looking: a wake after this is seen by the next cycle
            self._taken_at = time.monotonic()
            self.relay_pending(publisher)
        if self._published_ids and (len(self._published_ids) >= self.batch_size
                                    or time.monotonic() - self._forgotten_at >= self.forget_seconds):
            self._forget_published()

    def _until_next_cycle(self) -> float:
        wait = self.poll_seconds - (time.monotonic() - self._taken_at)
        if self._published_ids:
            wait = min(wait, self.forget_seconds - (time.monotonic() - self._forgotten_at))
        return max(0.0, wait)

    def _publish_handed(self, publisher: PipelinedPublisher) -> None:
        while self._handed and not self.stop_event.is_set():
            entries = list(itertools.islice(self._handed, self.batch_size))
            self._publish(publisher, entries, "handed")
            for _ in entries:  # only once confirmed: a lost connection leaves them to publish again
                self._handed.popleft()
            self._published_ids.extend(entry.id for entry in entries)

    def _publish(self, publisher: PipelinedPublisher, entries: list[OutboxEntry], how: str) -> None:
        """Publish ``entries`` and wait for RabbitMQ to confirm them all. Each target's pointers go to its own
        delivery queue, bound by the target's name."""
        exchange = self.topology.delivery_exchange.name
        with span("casebridge.relay.publish", pointers=len(entries), targets=sorted({e.target for e in entries})):
            publisher.publish_all(Outgoing(entry.body, exchange, entry.target) for entry in entries)
        metrics.POINTERS_PUBLISHED.labels(how).inc(len(entries))
        log.debug("relay.published", count=len(entries), how=how)

    def _forget_published(self) -> None:
        """Delete the rows of what was published and confirmed. Not waiting for the commit to reach the disk: a
        deletion lost in a crash only publishes those pointers again, which their workers ignore."""
        ids, self._published_ids = self._published_ids, []
        self._forgotten_at = time.monotonic()
        if not ids:
            return
        try:
            with self.store.transaction() as session:
                connection = session.connection()
                if self.store.is_postgres:
                    connection.execute(_NOT_WAITING_FOR_DISK)
                connection.execute(self._forget, {"ids": ids})
        except Exception as exc:  # the rows stay; once their reservation lapses they are published again
            log.warning("relay.forget_failed", count=len(ids), error=describe_error(exc))

    def relay_pending(self, publisher: PipelinedPublisher) -> int:
        """Publish every committed outbox message not reserved for a relay; returns how many were published."""
        published = 0
        # Every poll, not on every wake: replays and the scheduler wake the relay often, and a retry's time
        # is kept to within a poll either way.
        if time.monotonic() - self._retries_released_at >= self.poll_seconds:
            release_due_retries(self.store)
            if self.every_poll is not None:
                self.every_poll()
            self._retries_released_at = time.monotonic()
        while not self.stop_event.is_set():
            with self.store.transaction() as session:
                taken = session.connection().execute(self._take_batch, {"now": utc_now()}).all()
                batch = sorted((OutboxEntry(int(row.id), row.target, row.body) for row in taken),
                               key=lambda entry: entry.id)
                if not batch:
                    return published
                # A short batch took all there was when the statement ran; what commits later wakes the relay
                # again (no empty transaction after every wake to make sure).
                drained = len(batch) < self.batch_size
                self._publish(publisher, batch, "taken")  # the deletion commits once all are confirmed
            published += len(batch)
            if drained:
                return published
        return published


_NOT_WAITING_FOR_DISK = text("SET LOCAL synchronous_commit = off")


def _take_batch(size: int, *, locking: bool) -> ReturningDelete[Any, Any, Any]:
    """The oldest ``size`` outbox messages not reserved for a relay (at ``now``), taken and deleted in one
    statement (the deletion only counts once every message is confirmed). Built once: the relay runs it often."""
    outbox = table(OutboxMessage)
    unreserved = or_(outbox.c.reserved_until.is_(None), outbox.c.reserved_until <= bindparam("now"))
    oldest = select(outbox.c.id).where(unreserved).order_by(outbox.c.id).limit(size)
    if locking:
        oldest = oldest.with_for_update(skip_locked=True)
    return delete(outbox).where(outbox.c.id.in_(oldest.scalar_subquery())).returning(
        outbox.c.id, outbox.c.target, outbox.c.body)


def _forget(*, postgres: bool) -> Delete:
    """Delete published outbox rows by id."""
    outbox = table(OutboxMessage)
    return delete(outbox).where(in_list(outbox.c.id, "ids", postgres=postgres))
