"""The delivery pointer: what a target's queue carries for one delivery, and its one writer and one reader.

A pointer holds ids into the store, never the case: the delivery record is the truth, and a pointer queued twice
or late does no harm (the worker finds the delivery settled, or claimed, and skips it). Whoever queues a delivery
-- intake, a released retry or waiting event, a replay, a sweep -- writes its pointer to the outbox in the same
transaction (:func:`enqueue_deliveries`); the outbox relay alone knows which exchange and queue a target's
pointers go to. The delivery consumer reads them back with :func:`read_pointer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from broker.store.bulk import insert_rows
from broker.store.tables import OutboxMessage


@dataclass(frozen=True, slots=True)
class DeliveryPointer:
    delivery_id: int
    target: str
    event_id: str
    case_pk: str
    #: Queued again for a delivery a worker that is gone left in flight: an earlier attempt may have landed, so
    #: the worker taking it asks the target first.
    resume: bool = False

    def body(self) -> dict[str, Any]:
        body = asdict(self)
        if not self.resume:
            del body["resume"]
        return body


@dataclass(frozen=True, slots=True)
class Pointer:
    """A delivery pointer as a queue handed it to a worker."""

    delivery_id: int
    #: The queue gave it to an earlier consumer that went away without acknowledging it, or a sweep re-sent it
    #: for a delivery left in flight: an earlier call may have reached the target.
    redelivered: bool = False


def read_pointer(body: bytes | str | Mapping[str, Any], *, redelivered: bool = False) -> Pointer:
    """The pointer a queue message carries, as the worker takes it; ValueError for a body that is not one.

    Only the delivery's id is needed (the rest of a pointer says, for people reading a queue, what it is about);
    a resumed pointer counts as redelivered.
    """
    try:
        data = json.loads(body) if isinstance(body, bytes | str) else body
        return Pointer(int(data["delivery_id"]), redelivered=redelivered or bool(data.get("resume", False)))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a delivery pointer: {type(exc).__name__}") from exc


def enqueue_deliveries(session: Session, pointers: Iterable[DeliveryPointer], now: datetime) -> int:
    """Queue the pointers in the caller's transaction: they are published once it commits; returns how many."""
    rows = outbox_rows(pointers, now)
    insert_rows(session, OutboxMessage, rows)
    return len(rows)


def outbox_rows(pointers: Iterable[DeliveryPointer], now: datetime,
                reserved_until: datetime | None = None) -> list[dict[str, Any]]:
    """The outbox rows that queue ``pointers``: reserved until ``reserved_until`` for a relay they are handed to."""
    return [{"target": pointer.target, "body": pointer.body(), "created_at": now, "reserved_until": reserved_until}
            for pointer in pointers]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox row as a relay publishes it (the row is deleted once RabbitMQ has confirmed it)."""

    id: int
    target: str
    body: dict[str, Any]


class Handoff(Protocol):
    """A relay in the writing process, which takes the outbox entries a transaction has just committed and
    publishes them at once (see ``OutboxRelay``)."""

    def accepting(self) -> bool:
        """Whether handed entries would be published now (the relay is connected)."""

    def hand(self, entries: list[OutboxEntry]) -> None:
        """Publish these committed entries, whose rows were reserved for this relay."""
