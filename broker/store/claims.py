"""Loading deliveries and claiming them for a call to the target, a prefetch window at a time.

A worker takes the delivery pointers the queue handed it, loads the deliveries that still have work to do in one
query, and claims them in one transaction: each becomes ``in_flight`` under the worker's name before the target
is called, so a crash can never send it twice unnoticed. The per-case order check ("is an earlier event of this
case still on its way to this target?") runs under a lock on the cases' rows, so it can never miss the release of
the next waiting event (see :mod:`broker.store.deliveries`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    Update,
    and_,
    bindparam,
    cast,
    func,
    insert,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import CompoundSelect

from broker.model.events import EVENT_ADAPTER, AnyEvent, utc_now
from broker.store.bulk import in_list
from broker.store.database import Store, is_postgres
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
    with store.single_read() as connection:
        rows = connection.execute(_statements(store.is_postgres).open_deliveries, {"ids": list(wanted)}).all()
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
    if wanted and is_postgres(session):
        session.connection().execute(_statements(True).lock_cases, {"ids": wanted})


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
        statements, connection = _statements(is_postgres(session)), session.connection()
        wanted = set(ids)
        current: dict[int, Row[Any]] = {}
        unsettled: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for found in connection.execute(statements.claim_view, {"ids": ids, "case_pks": list(case_pks)}):
            if found.id in wanted:
                current[found.id] = found
            if found.state not in SETTLED_STATES:
                unsettled.setdefault((found.case_pk, found.target), []).append((found.sequence, found.id))
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
        session.connection().execute(_statements(is_postgres(session)).take,
                                     {"ids": taking, "now": now, "worker_id": worker_id})
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


@dataclass(frozen=True)
class _Statements:
    """Built once and run with their values bound: a worker runs them for every window, often of one delivery,
    where building each statement (and its cache key) anew cost more than running it."""

    open_deliveries: Select[Any]
    lock_cases: Select[Any]
    #: The handed deliveries as they stand, and every delivery of their cases not yet settled (to any target,
    #: for the per-case order check): one query.
    claim_view: Select[Any] | CompoundSelect[Any]
    #: Mark deliveries in flight under a worker, counting the attempt as it starts.
    take: Update


@functools.cache
def _statements(postgres: bool) -> _Statements:
    tables = {model: table(model) for model in (DeliveryRecord, EventRecord, CaseRecord, ExternalRef)}
    deliveries, events, cases, references = (tables[model].c for model in tables)
    by_ids = in_list(deliveries.id, "ids", postgres=postgres)
    now = bindparam("now", type_=deliveries.updated_at.type)
    # A scalar subquery rather than an outer join: always one probe of the key per delivery. Joined, the planner
    # hashed the whole table whenever its statistics were from when it was smaller.
    reference = select(references.reference).where(
        references.case_pk == deliveries.case_pk, references.target == deliveries.target).scalar_subquery()
    view = ("id", "case_pk", "target", "state", "sequence", "next_attempt_at", "claimed_by")
    handed_now = select(*(deliveries[name] for name in view)).where(by_ids)
    return _Statements(
        open_deliveries=select(
            deliveries.id, deliveries.target, deliveries.case_pk, deliveries.state, deliveries.sequence,
            deliveries.attempts, deliveries.first_attempt_at, deliveries.next_attempt_at, deliveries.may_have_landed,
            deliveries.deferrals, cast(events.payload, Text).label("payload"), events.received_at,
            events.correlation_id, cases.case_id, reference.label("reference"),
        ).select_from(
            tables[DeliveryRecord].join(tables[EventRecord], events.event_id == deliveries.event_id)
            .join(tables[CaseRecord], cases.id == deliveries.case_pk)
        ).where(by_ids),
        lock_cases=select(cases.id).where(in_list(cases.id, "ids", postgres=postgres)).order_by(cases.id)
        .with_for_update(),
        claim_view=union_all(handed_now, unsettled_of_cases(view)) if postgres else
        select(*(deliveries[name] for name in view)).where(or_(
            by_ids, and_(in_list(deliveries.case_pk, "case_pks", postgres=False),
                         deliveries.state.not_in(SETTLED_STATES)))),
        take=update(tables[DeliveryRecord]).where(by_ids).values(
            state="in_flight", updated_at=now, claimed_by=bindparam("worker_id"),
            attempts=deliveries.attempts + 1, may_have_landed=True,
            first_attempt_at=func.coalesce(deliveries.first_attempt_at, now)),
    )


def claim(store: Store, delivery: PendingDelivery, *, redelivered: bool = False,
          worker_id: str | None = None) -> Claim:
    """Claim one delivery (see :func:`claim_many`)."""
    return claim_many(store, [Handed(delivery, redelivered)], worker_id=worker_id)[0]


def unsettled_of_cases(columns: Sequence[str]) -> Select[Any]:
    """``columns`` of every delivery not yet settled of the cases bound as ``case_pks`` (PostgreSQL).

    One index probe per case, whatever the table's statistics say. As ``case_pk = ANY(...)``, the planner
    scanned the whole table whenever its statistics were from when it was much smaller, as they are while a new
    deployment's tables fill (10-20 ms a window where the probes take a tenth of a millisecond).
    """
    deliveries = table(DeliveryRecord)
    wanted = func.unnest(bindparam("case_pks", type_=ARRAY(deliveries.c.case_pk.type))).table_valued(
        "case_pk").render_derived(name="wanted")
    condition: ColumnElement[bool] = and_(deliveries.c.case_pk == wanted.c.case_pk,
                                          deliveries.c.state.not_in(SETTLED_STATES))
    # OFFSET 0 keeps the subquery from being flattened into a join, which the planner would hash again.
    per_case = select(*(deliveries.c[name] for name in columns)).where(condition).offset(0).lateral("per_case")
    return select(*(per_case.c[name] for name in columns)).select_from(wanted).join(per_case, true())
