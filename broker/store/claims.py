"""Loading deliveries and claiming them for a call to the target, a prefetch window at a time.

A worker takes the delivery pointers the queue handed it, loads the deliveries that still have work to do in one
query, and claims them in one transaction: each becomes ``in_flight`` under the worker's name before the target
is called, so a crash can never send it twice unnoticed. The per-case order check ("is an earlier event of this
case still on its way to this target?") runs under a lock on the cases' rows, so it can never miss the release of
the next waiting event (see :mod:`broker.store.deliveries`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Text, cast, func, insert, literal, select, update
from sqlalchemy.orm import Session

from broker.model.events import EVENT_ADAPTER, AnyEvent, utc_now
from broker.store.bulk import any_of
from broker.store.database import Store
from broker.store.tables import AuditEntry, CaseRecord, DeliveryRecord, EventRecord, ExternalRef, table
from broker.store.workers import live_workers

#: States in which a delivery still has work to do and a worker may take it.
OPEN_STATES = ("pending", "retrying", "in_flight")
#: States after which a later event of the same case may go to the same target.
SETTLED_STATES = ("delivered", "discarded")


@dataclass(frozen=True)
class PendingDelivery:
    delivery_id: int
    target: str
    case_pk: str
    case_id: str
    sequence: int
    state: str
    event: AnyEvent
    correlation_id: str
    attempts: int
    external_ref: str | None
    first_attempt_at: datetime | None
    next_attempt_at: datetime | None
    #: An earlier attempt may have taken effect at the target (see ``DeliveryRecord.may_have_landed``).
    may_have_landed: bool = False
    #: Times the delivery was put back to wait; the next wait is the policy's step after this many.
    deferrals: int = 0
    #: When the event was accepted (the delivery latency is counted from here).
    received_at: datetime | None = None

    @property
    def our_reference(self) -> str:
        """Our reference for the case, given to LOB systems so they can find it again."""
        return f"CB-{self.case_pk}"

    @property
    def event_id(self) -> str:
        return str(self.event.event_id)


class Claim(StrEnum):
    """What a worker may do with a delivery it was handed."""

    go = "go"            # call the target
    resume = "resume"    # call the target, but an earlier attempt may have reached it: look before creating
    wait = "wait"        # an earlier event of the case is still on its way to this target
    defer = "defer"      # another worker, still alive, is calling the target: ask again later
    skip = "skip"        # nothing to do (already settled, or not due yet)


@dataclass(frozen=True)
class Handed:
    """A delivery as the queue handed it to a worker."""

    delivery: PendingDelivery
    #: The queue gave this pointer to an earlier consumer that went away without acknowledging it.
    redelivered: bool = False


def load_open(store: Store, delivery_ids: Iterable[int],
              states: tuple[str, ...] = OPEN_STATES) -> dict[int, PendingDelivery]:
    """The deliveries among ``delivery_ids`` that still have work to do (or are in ``states``), by id; settled and
    unknown ones are absent."""
    wanted = set(delivery_ids)
    if not wanted:
        return {}
    with store.read() as session:
        rows = session.execute(
            select(DeliveryRecord.id, DeliveryRecord.target, DeliveryRecord.case_pk, DeliveryRecord.state,
                   DeliveryRecord.sequence, DeliveryRecord.attempts, DeliveryRecord.first_attempt_at,
                   DeliveryRecord.next_attempt_at, DeliveryRecord.may_have_landed, DeliveryRecord.deferrals,
                   cast(EventRecord.payload, Text).label("payload"), EventRecord.received_at,
                   EventRecord.correlation_id,
                   CaseRecord.case_id, ExternalRef.reference)
            .join(EventRecord, EventRecord.event_id == DeliveryRecord.event_id)
            .join(CaseRecord, CaseRecord.id == DeliveryRecord.case_pk)
            .outerjoin(ExternalRef, (ExternalRef.case_pk == DeliveryRecord.case_pk)
                       & (ExternalRef.target == DeliveryRecord.target))
            .where(any_of(session, DeliveryRecord.id, wanted))
        ).all()
    # The state is checked here, not in SQL: given a state condition, PostgreSQL may scan the state index's
    # entries for every open delivery (a whole backlog) to intersect them with a few ids.
    return {
        row.id: PendingDelivery(
            delivery_id=row.id, target=row.target, case_pk=row.case_pk, case_id=row.case_id,
            sequence=row.sequence, state=row.state, event=EVENT_ADAPTER.validate_json(row.payload),
            correlation_id=row.correlation_id, attempts=row.attempts, external_ref=row.reference,
            first_attempt_at=row.first_attempt_at, next_attempt_at=row.next_attempt_at,
            may_have_landed=bool(row.may_have_landed), deferrals=row.deferrals, received_at=row.received_at,
        )
        for row in rows if row.state in states
    }


def load_pending(store: Store, delivery_id: int) -> PendingDelivery | None:
    """The delivery if it still has work to do; None if it was settled, failed or never existed."""
    return load_open(store, [delivery_id]).get(delivery_id)


def lock_cases(session: Session, case_pks: Iterable[str]) -> None:
    """Serialise every transition of these cases' deliveries (SQLite serialises all writers already).

    Rows are locked in key order, so two workers locking overlapping sets wait for each other, never deadlock.
    """
    wanted = sorted(set(case_pks))
    if wanted and session.get_bind().dialect.name == "postgresql":
        session.execute(select(CaseRecord.id).where(any_of(session, CaseRecord.id, wanted)).order_by(CaseRecord.id)
                        .with_for_update())


def claim_many(store: Store, handed: Sequence[Handed], *, worker_id: str | None = None) -> list[Claim]:
    """Claim each handed delivery, in the order given; returns one :class:`Claim` per item.

    A delivery already ``in_flight`` is taken over only when it was redelivered and the worker that claimed it
    is gone (its heartbeat is stale, or it never had one); while that worker lives the claim is ``defer``. A
    worker handed its own in-flight delivery again resumes it: its earlier attempt was abandoned (a worker
    handles one window at a time), for instance when handling the window failed and it is retried pointer by
    pointer.
    """
    if not handed:
        return []
    now = utc_now()
    ids = [item.delivery.delivery_id for item in handed]
    case_pks = {item.delivery.case_pk for item in handed}
    with store.transaction() as session:
        lock_cases(session, case_pks)
        current = {row.id: row for row in session.execute(
            select(DeliveryRecord.id, DeliveryRecord.state, DeliveryRecord.sequence, DeliveryRecord.next_attempt_at,
                   DeliveryRecord.claimed_by)
            .where(any_of(session, DeliveryRecord.id, ids))
        )}
        unsettled: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for other in session.execute(
            select(DeliveryRecord.id, DeliveryRecord.case_pk, DeliveryRecord.target, DeliveryRecord.sequence)
            .where(any_of(session, DeliveryRecord.case_pk, case_pks), DeliveryRecord.state.not_in(SETTLED_STATES))
        ):
            unsettled.setdefault((other.case_pk, other.target), []).append((other.sequence, other.id))
        holders = {row.claimed_by for item in handed if (row := current.get(item.delivery.delivery_id)) is not None
                   and row.state == "in_flight" and item.redelivered and row.claimed_by
                   and row.claimed_by != worker_id}
        alive = live_workers(session, holders, now)

        claims: list[Claim] = []
        behind: dict[int, int] = {}
        seen: set[int] = set()
        for item in handed:
            delivery, row = item.delivery, current.get(item.delivery.delivery_id)
            if row is None or row.state not in OPEN_STATES or row.id in seen:
                claims.append(Claim.skip)
            elif row.state == "in_flight" and not item.redelivered and not (worker_id and row.claimed_by == worker_id):
                claims.append(Claim.skip)  # a second copy of the pointer: its worker has it
            elif row.state == "in_flight" and row.claimed_by in alive:
                claims.append(Claim.defer)
            elif row.state == "retrying" and row.next_attempt_at and row.next_attempt_at > now:
                claims.append(Claim.skip)  # an early copy of the pointer; the due-retry release publishes it on time
            else:
                earlier = min((entry for entry in unsettled.get((delivery.case_pk, delivery.target), [])
                               if entry[0] < row.sequence), default=None)
                if earlier is not None:
                    behind[row.id] = earlier[1]
                    claims.append(Claim.wait)
                else:
                    claims.append(Claim.resume if row.state == "in_flight" else Claim.go)
            if row is not None:
                seen.add(row.id)
        _write_claims(session, handed, claims, behind, worker_id, now)
    return claims


def _write_claims(session: Session, handed: Sequence[Handed], claims: list[Claim], behind: dict[int, int],
                  worker_id: str | None, now: datetime) -> None:
    taking = [item.delivery.delivery_id for item, claim in zip(handed, claims, strict=True)
              if claim in (Claim.go, Claim.resume)]
    if taking:
        # The attempt is counted as it starts, and may land from now on: a worker that dies inside the call
        # leaves a delivery that the next worker asks the target about before sending again.
        session.execute(update(DeliveryRecord).where(any_of(session, DeliveryRecord.id, taking)).values(
            state="in_flight", updated_at=now, claimed_by=worker_id, attempts=DeliveryRecord.attempts + 1,
            may_have_landed=True,
            first_attempt_at=func.coalesce(DeliveryRecord.first_attempt_at,
                                           literal(now, DeliveryRecord.first_attempt_at.type)),
        ))
    waiting = [item.delivery for item, claim in zip(handed, claims, strict=True) if claim is Claim.wait]
    if waiting:
        session.execute(update(DeliveryRecord).where(DeliveryRecord.id.in_([d.delivery_id for d in waiting]))
                        .values(state="waiting", updated_at=now))
        session.execute(insert(table(AuditEntry)), [
            {"case_pk": delivery.case_pk, "event_id": delivery.event_id, "target": delivery.target,
             "step": "waiting", "actor": "casebridge", "detail": {"behind_delivery": behind[delivery.delivery_id]},
             "at": now}
            for delivery in waiting
        ])


def claim(store: Store, delivery: PendingDelivery, *, redelivered: bool = False,
          worker_id: str | None = None) -> Claim:
    """Claim one delivery (see :func:`claim_many`)."""
    return claim_many(store, [Handed(delivery, redelivered)], worker_id=worker_id)[0]
