"""A delivery's life in the store: claimed, then delivered, retried later or failed — each step one transaction.

The states: ``pending`` (its pointer is queued), ``waiting`` (an earlier event of the same case has not reached the
target yet), ``in_flight`` (a worker is calling the target), ``retrying`` (until ``next_attempt_at``),
``delivered``, ``failed`` (in the failed-message store) and ``discarded`` (by support staff).

Every transition that could race with another worker locks the case's row first, so the per-case order check
("is an earlier event still on its way to this target?") and the release of the next waiting event can never
miss each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from broker.errors import DeliveryError
from broker.model.events import EVENT_ADAPTER, AnyEvent, utc_now
from broker.store.database import Store
from broker.store.tables import (
    AuditEntry,
    CaseRecord,
    DeliveryRecord,
    EventRecord,
    ExternalRef,
    FailedMessage,
    LobUpdate,
    OutboxMessage,
)

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
    skip = "skip"        # nothing to do (already settled, or not due yet)


def load_pending(store: Store, delivery_id: int) -> PendingDelivery | None:
    """The delivery if it still has work to do; None if it was settled, failed or never existed."""
    with store.read() as session:
        row = session.execute(
            select(DeliveryRecord.id, DeliveryRecord.target, DeliveryRecord.case_pk, DeliveryRecord.state,
                   DeliveryRecord.sequence, DeliveryRecord.attempts, DeliveryRecord.first_attempt_at,
                   DeliveryRecord.next_attempt_at, EventRecord.payload, EventRecord.correlation_id,
                   CaseRecord.case_id, ExternalRef.reference)
            .join(EventRecord, EventRecord.event_id == DeliveryRecord.event_id)
            .join(CaseRecord, CaseRecord.id == DeliveryRecord.case_pk)
            .outerjoin(ExternalRef, (ExternalRef.case_pk == DeliveryRecord.case_pk)
                       & (ExternalRef.target == DeliveryRecord.target))
            .where(DeliveryRecord.id == delivery_id)
        ).first()
    if row is None or row.state not in OPEN_STATES:
        return None
    return PendingDelivery(
        delivery_id=row.id, target=row.target, case_pk=row.case_pk, case_id=row.case_id, sequence=row.sequence,
        state=row.state, event=EVENT_ADAPTER.validate_python(row.payload), correlation_id=row.correlation_id,
        attempts=row.attempts, external_ref=row.reference, first_attempt_at=row.first_attempt_at,
        next_attempt_at=row.next_attempt_at,
    )


def _lock_case(session: Session, case_pk: str) -> None:
    """Serialise every transition of one case's deliveries (SQLite serialises all writers already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(CaseRecord.id).where(CaseRecord.id == case_pk).with_for_update())


def claim(store: Store, delivery: PendingDelivery, *, redelivered: bool = False) -> Claim:
    """Take the delivery for one call to its target, unless an earlier event of its case must go first.

    A delivery already ``in_flight`` is taken over only when ``redelivered`` says its previous worker went away;
    otherwise another worker is calling the target right now.
    """
    now = utc_now()
    with store.transaction() as session:
        _lock_case(session, delivery.case_pk)
        current = session.get(DeliveryRecord, delivery.delivery_id)
        if current is None or current.state not in OPEN_STATES:
            return Claim.skip
        if current.state == "in_flight" and not redelivered:
            return Claim.skip
        if current.state == "retrying" and current.next_attempt_at and current.next_attempt_at > now:
            return Claim.skip  # an early copy of the pointer; the due-retry release publishes it on time
        earlier = session.scalar(
            select(DeliveryRecord.id).where(
                DeliveryRecord.case_pk == delivery.case_pk, DeliveryRecord.target == delivery.target,
                DeliveryRecord.sequence < current.sequence, DeliveryRecord.state.not_in(SETTLED_STATES),
            ).limit(1)
        )
        if earlier is not None:
            current.state, current.updated_at = "waiting", now
            _audit(session, delivery, "waiting", "casebridge", {"behind_delivery": earlier}, now)
            return Claim.wait
        resumed = current.state == "in_flight"
        current.state, current.updated_at = "in_flight", now
        current.first_attempt_at = current.first_attempt_at or now
        return Claim.resume if resumed else Claim.go


def _settle(session: Session, delivery: PendingDelivery, values: dict[str, Any]) -> bool:
    """Move an open delivery to its outcome; False if another worker already recorded one."""
    result = session.execute(
        update(DeliveryRecord)
        .where(DeliveryRecord.id == delivery.delivery_id, DeliveryRecord.state.in_(OPEN_STATES))
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_delivered(
    store: Store, delivery: PendingDelivery, *, attempts: int, external_ref: str | None, detail: dict[str, Any],
    exchange: str,
) -> bool:
    now = utc_now()
    with store.transaction() as session:
        _lock_case(session, delivery.case_pk)
        if not _settle(session, delivery, {
            "state": "delivered", "attempts": attempts, "external_ref": external_ref,
            "delivered_at": now, "updated_at": now, "last_error": None, "next_attempt_at": None,
        }):
            return False
        if external_ref:
            _remember_external_ref(session, delivery, external_ref, now)
        if detail.get("lob_update_id"):  # our own change in the LOB system: polling must not report it back
            session.merge(LobUpdate(target=delivery.target, update_id=str(detail["lob_update_id"]),
                                    event_id=delivery.event_id, received_at=now))
        _audit(session, delivery, "delivered", f"target:{delivery.target}",
               {"attempts": attempts, "external_ref": external_ref, **detail}, now)
        release_next_waiting(session, delivery.case_pk, delivery.target, exchange, now)
    return True


def release_next_waiting(session: Session, case_pk: str, target: str, exchange: str, now: datetime) -> int | None:
    """Queue the case's next waiting delivery to ``target`` if nothing earlier is still unsettled."""
    rows = session.execute(
        select(DeliveryRecord.id, DeliveryRecord.state, DeliveryRecord.event_id)
        .where(DeliveryRecord.case_pk == case_pk, DeliveryRecord.target == target,
               DeliveryRecord.state.not_in(SETTLED_STATES))
        .order_by(DeliveryRecord.sequence).limit(1)
    ).first()
    if rows is None or rows.state != "waiting":
        return None
    session.execute(update(DeliveryRecord).where(DeliveryRecord.id == rows.id)
                    .values(state="pending", updated_at=now))
    session.execute(insert(OutboxMessage).values(
        exchange=exchange, routing_key=target, created_at=now,
        body={"delivery_id": rows.id, "target": target, "event_id": rows.event_id, "case_pk": case_pk},
    ))
    return int(rows.id)


def _remember_external_ref(session: Session, delivery: PendingDelivery, reference: str, now: datetime) -> None:
    """Insert or replace the LOB system's reference for this case and target, in one statement."""
    upsert = (postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(ExternalRef)
    session.execute(
        upsert.values(case_pk=delivery.case_pk, target=delivery.target, reference=reference, recorded_at=now)
        .on_conflict_do_update(index_elements=["case_pk", "target"],
                               set_={"reference": reference, "recorded_at": now})
    )


def record_attempt_failed(store: Store, delivery: PendingDelivery, *, attempt: int, error: BaseException) -> None:
    """An attempt failed but will be tried again at once: keep the error in the audit trail."""
    with store.transaction() as session:
        _audit(session, delivery, "attempt_failed", "casebridge", {"attempt": attempt, **describe(error)}, utc_now())


def record_retry_later(
    store: Store, delivery: PendingDelivery, *, attempts: int, error: BaseException, next_attempt_at: datetime
) -> bool:
    """Transient failure: the delivery waits in the store and is queued again when due."""
    now = utc_now()
    described = describe(error)
    with store.transaction() as session:
        if not _settle(session, delivery, {
            "state": "retrying", "attempts": attempts, "updated_at": now, "next_attempt_at": next_attempt_at,
            "last_error": f"{described['reason']}: {described['message']}",
        }):
            return False
        _audit(session, delivery, "retry_scheduled", "casebridge",
               {"attempts": attempts, "next_attempt_at": next_attempt_at.isoformat(), **described}, now)
    return True


def record_failed(
    store: Store, delivery: PendingDelivery, *, attempts: int, error: BaseException, error_class: str
) -> bool:
    """Give up on a delivery: it goes to the failed-message store with the reason, for support staff."""
    now = utc_now()
    described = describe(error)
    with store.transaction() as session:
        if not _settle(session, delivery, {
            "state": "failed", "attempts": attempts, "updated_at": now, "next_attempt_at": None,
            "last_error": f"{described['reason']}: {described['message']}",
        }):
            return False
        session.add(FailedMessage(
            stage="delivery", event_id=delivery.event_id, case_pk=delivery.case_pk,
            delivery_id=delivery.delivery_id, target=delivery.target, error_class=error_class,
            reason=described["reason"], error_text=described["message"], attempts=attempts,
            first_failed_at=delivery.first_attempt_at or now, last_failed_at=now,
        ))
        _audit(session, delivery, "failed", "casebridge", {"attempts": attempts, "error_class": error_class,
                                                            **described}, now)
    return True


def release_due_retries(store: Store, exchange: str, *, limit: int = 500) -> int:
    """Queue again every retrying delivery whose time has come; returns how many."""
    now = utc_now()
    with store.transaction() as session:
        query = (select(DeliveryRecord).where(DeliveryRecord.state == "retrying",
                                              DeliveryRecord.next_attempt_at <= now)
                 .order_by(DeliveryRecord.next_attempt_at).limit(limit))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        due = session.scalars(query).all()
        for delivery in due:
            delivery.state, delivery.updated_at = "pending", now
            session.add(OutboxMessage(
                exchange=exchange, routing_key=delivery.target, created_at=now,
                body={"delivery_id": delivery.id, "target": delivery.target, "event_id": delivery.event_id,
                      "case_pk": delivery.case_pk},
            ))
    return len(due)


def _audit(session: Session, delivery: PendingDelivery, step: str, actor: str, detail: dict[str, Any],
           now: datetime) -> None:
    session.execute(insert(AuditEntry).values(
        case_pk=delivery.case_pk, event_id=delivery.event_id, target=delivery.target, step=step, actor=actor,
        detail=detail, at=now,
    ))


def describe(error: BaseException) -> dict[str, Any]:
    """A machine-readable reason and human-readable text for any error."""
    if isinstance(error, DeliveryError):
        detail: dict[str, Any] = {"reason": error.reason, "message": error.message}
        if error.response_excerpt:
            detail["response"] = error.response_excerpt
        return detail
    return {"reason": "unexpected_error", "message": f"{type(error).__name__}: {error}"}
