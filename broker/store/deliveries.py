"""A delivery's outcome in the store: delivered, retried later or failed.

The states: ``pending`` (its pointer is queued), ``waiting`` (an earlier event of the same case has not reached the
target yet), ``in_flight`` (a worker is calling the target), ``retrying`` (until ``next_attempt_at``),
``delivered``, ``failed`` (in the failed-message store) and ``discarded`` (by support staff). Loading and claiming
deliveries is in :mod:`broker.store.claims`.

Every transition that could race with another worker locks the case's row first, so the per-case order check
and the release of the next waiting event can never miss each other. Successful deliveries are recorded a batch
at a time: one transaction for a whole prefetch window.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select, update
from sqlalchemy.orm import Session

from broker.errors import DeliveryError
from broker.failures.causes import normalise_error
from broker.model.events import utc_now
from broker.store.bulk import in_list, insert_rows, pipelined, update_rows
from broker.store.claims import OPEN_STATES, SETTLED_STATES, PendingDelivery, lock_cases, unsettled_of_cases
from broker.store.database import Store, is_postgres
from broker.store.references import remember_references
from broker.store.tables import (
    AuditEntry,
    DeliveryRecord,
    FailedMessage,
    LobUpdate,
    table,
)
from broker.transport.pointer import DeliveryPointer, enqueue_deliveries


@dataclass(frozen=True)
class Delivered:
    """A delivery the target accepted, ready to be recorded."""

    delivery: PendingDelivery
    attempts: int
    external_ref: str | None
    detail: dict[str, Any] = field(default_factory=dict)


def _settle(session: Session, delivery: PendingDelivery, values: dict[str, Any],
            states: tuple[str, ...] = OPEN_STATES) -> bool:
    """Move an open delivery to its outcome; False if another worker already recorded one."""
    result = session.execute(
        update(DeliveryRecord)
        .where(DeliveryRecord.id == delivery.delivery_id, DeliveryRecord.state.in_(states))
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_delivered_many(store: Store, delivered: Sequence[Delivered], *,
                          states: tuple[str, ...] = OPEN_STATES) -> list[bool]:
    """Record every delivery in ``delivered`` as delivered, in one transaction; returns, per item, whether it was
    this call that settled it (False where another worker had already recorded an outcome, or it had left
    ``states``)."""
    if not delivered:
        return []
    now = utc_now()
    with store.transaction() as session:
        lock_cases(session, (item.delivery.case_pk for item in delivered))
        ids = [item.delivery.delivery_id for item in delivered]
        # By id alone, the state checked here: see ``claims.load_open``.
        still_open = {row.id for row in session.connection().execute(_statements(is_postgres(session)).locked_states,
                                                                     {"ids": ids}) if row.state in states}
        settling = [item for item in delivered if item.delivery.delivery_id in still_open]
        if settling:
            _write_delivered(session, settling, now)
            release_next_waiting_many(session, [(item.delivery.case_pk, item.delivery.target) for item in settling],
                                      now)
    return [item.delivery.delivery_id in still_open for item in delivered]


@dataclass(frozen=True)
class _Statements:
    """Built once and run with their values bound, as the claim's are (see :mod:`broker.store.claims`)."""

    #: The deliveries' states, their rows locked (PostgreSQL) until the outcome commits.
    locked_states: Select[Any]
    #: The cases' deliveries not yet settled, with what releasing the next waiting one needs.
    unsettled_of_cases: Select[Any]


_UNSETTLED_VIEW = ("id", "case_pk", "target", "state", "event_id", "sequence")


@functools.cache
def _statements(postgres: bool) -> _Statements:
    deliveries = table(DeliveryRecord).c
    locked_states = select(deliveries.id, deliveries.state).where(in_list(deliveries.id, "ids", postgres=postgres))
    return _Statements(
        locked_states=locked_states.with_for_update() if postgres else locked_states,
        unsettled_of_cases=unsettled_of_cases(_UNSETTLED_VIEW) if postgres else
        select(*(deliveries[name] for name in _UNSETTLED_VIEW))
        .where(in_list(deliveries.case_pk, "case_pks", postgres=False), deliveries.state.not_in(SETTLED_STATES)),
    )


def _write_delivered(session: Session, settling: list[Delivered], now: datetime) -> None:
    with pipelined(session):  # the outcome and its audit entries in one round trip
        _mark_delivered(session, settling, now)
        insert_rows(session, AuditEntry, [
            {"case_pk": item.delivery.case_pk, "event_id": item.delivery.event_id, "target": item.delivery.target,
             "step": "delivered", "actor": f"target:{item.delivery.target}", "at": now,
             "detail": {"attempts": item.attempts, "external_ref": item.external_ref, **item.detail}}
            for item in settling
        ])
    references = [item for item in settling if item.external_ref]
    if references:
        remember_references(session, {(item.delivery.case_pk, item.delivery.target): str(item.external_ref)
                                       for item in references}, now)
    for item in settling:
        if item.detail.get("lob_update_id"):  # our own change in the LOB system: polling must not report it back
            session.merge(LobUpdate(target=item.delivery.target, update_id=str(item.detail["lob_update_id"]),
                                    event_id=item.delivery.event_id, received_at=now))


def _mark_delivered(session: Session, settling: list[Delivered], now: datetime) -> None:
    update_rows(session, DeliveryRecord, [
        {"id": item.delivery.delivery_id, "state": "delivered", "attempts": item.attempts,
         "external_ref": item.external_ref, "delivered_at": now, "updated_at": now, "last_error": None,
         "next_attempt_at": None}
        for item in settling
    ])


def record_delivered(
    store: Store, delivery: PendingDelivery, *, attempts: int, external_ref: str | None, detail: dict[str, Any],
) -> bool:
    """Record one delivery as delivered (see :func:`record_delivered_many`)."""
    return record_delivered_many(store, [Delivered(delivery, attempts, external_ref, detail)])[0]


def release_next_waiting(session: Session, case_pk: str, target: str, now: datetime) -> int | None:
    """Queue the case's next waiting delivery to ``target`` if nothing earlier is still unsettled."""
    return release_next_waiting_many(session, [(case_pk, target)], now).get((case_pk, target))


def release_next_waiting_many(session: Session, pairs: Sequence[tuple[str, str]],
                              now: datetime) -> dict[tuple[str, str], int]:
    """For each (case, target), queue the next waiting delivery if nothing earlier is still unsettled; returns
    the released delivery ids. One query for all the pairs, and writes only where something is released."""
    wanted = set(pairs)
    if not wanted:
        return {}
    first_unsettled: dict[tuple[str, str], Any] = {}
    for row in session.connection().execute(_statements(is_postgres(session)).unsettled_of_cases,
                                            {"case_pks": list({case_pk for case_pk, _ in wanted})}):
        key = (row.case_pk, row.target)
        if key in wanted and (key not in first_unsettled or row.sequence < first_unsettled[key].sequence):
            first_unsettled[key] = row
    released = {key: row for key, row in first_unsettled.items() if row.state == "waiting"}
    if released:
        session.execute(update(DeliveryRecord).where(DeliveryRecord.id.in_([row.id for row in released.values()]))
                        .values(state="pending", updated_at=now))
        enqueue_deliveries(session, (DeliveryPointer(row.id, target, row.event_id, case_pk)
                                     for (case_pk, target), row in released.items()), now)
    return {key: int(row.id) for key, row in released.items()}


def record_attempt_failed(store: Store, delivery: PendingDelivery, *, attempt: int, error: BaseException) -> None:
    """An attempt failed and the next starts at once: the error goes to the audit trail, and the next attempt is
    counted before it starts (so a worker dying inside it leaves the count right)."""
    now = utc_now()
    with store.transaction() as session:
        session.execute(update(DeliveryRecord).where(DeliveryRecord.id == delivery.delivery_id)
                        .values(attempts=attempt + 1, updated_at=now))
        _audit(session, delivery, "attempt_failed", "casebridge", {"attempt": attempt, **describe(error)}, now)


def record_retry_later(
    store: Store, delivery: PendingDelivery, *, attempts: int, error: BaseException, next_attempt_at: datetime,
    may_have_landed: bool, deferrals: int | None = None,
) -> bool:
    """Transient failure: the delivery waits in the store and is queued again when due.

    ``may_have_landed`` is kept with it, so whichever worker takes it next asks the target first if an attempt
    may have taken effect; ``deferrals`` (when given) is the count of waits so far, for the next one's length.
    """
    now = utc_now()
    described = describe(error)
    values: dict[str, Any] = {
        "state": "retrying", "attempts": attempts, "updated_at": now, "next_attempt_at": next_attempt_at,
        "last_error": error_line(described), "may_have_landed": may_have_landed,
    }
    if deferrals is not None:
        values["deferrals"] = deferrals
    with store.transaction() as session:
        if not _settle(session, delivery, values):
            return False
        _audit(session, delivery, "retry_scheduled", "casebridge",
               {"attempts": attempts, "next_attempt_at": next_attempt_at.isoformat(), **described}, now)
    return True


def record_unconfirmed(store: Store, delivery: PendingDelivery, *, attempts: int, error: BaseException) -> bool:
    """A create may have landed and the target cannot say: hold it for the reconciliation job, never re-create.

    Not settled, so the case's later events to this target wait behind it.
    """
    now = utc_now()
    described = describe(error)
    with store.transaction() as session:
        if not _settle(session, delivery, {
            "state": "unconfirmed", "attempts": attempts, "updated_at": now, "next_attempt_at": None,
            "last_error": error_line(described), "may_have_landed": True,
        }):
            return False
        _audit(session, delivery, "unconfirmed", "casebridge", {"attempts": attempts, **described}, now)
    return True


def record_failed(
    store: Store, delivery: PendingDelivery, *, attempts: int, error: BaseException, error_class: str,
    may_have_landed: bool | None = None, states: tuple[str, ...] = OPEN_STATES,
) -> bool:
    """Give up on a delivery: it goes to the failed-message store with the reason, for support staff.

    The target's answer (a refusal's body) is kept in the failed message's text, where support staff read it.
    ``may_have_landed`` None keeps what the store knows (a replay then asks the target first if it may have).
    """
    now = utc_now()
    described = describe(error)
    values: dict[str, Any] = {"state": "failed", "attempts": attempts, "updated_at": now, "next_attempt_at": None,
                              "last_error": error_line(described)}
    if may_have_landed is not None:
        values["may_have_landed"] = may_have_landed
    with store.transaction() as session:
        if not _settle(session, delivery, values, states=states):
            return False
        session.add(FailedMessage(
            stage="delivery", event_id=delivery.event_id, case_pk=delivery.case_pk,
            delivery_id=delivery.delivery_id, target=delivery.target, error_class=error_class,
            reason=described["reason"], error_text=failure_text(described),
            cause=normalise_error(described["message"]), attempts=attempts,
            first_failed_at=delivery.first_attempt_at or now, last_failed_at=now,
        ))
        _audit(session, delivery, "failed", "casebridge", {"attempts": attempts, "error_class": error_class,
                                                            **described}, now)
    return True


#: Joins a failure's message and the target's answer in the failed message's text.
TARGET_ANSWERED = "\n\nThe target answered:\n"


def failure_text(described: dict[str, Any]) -> str:
    """The failed message's text: what went wrong, then the target's own words, if it gave any."""
    if described.get("response"):
        return f"{described['message']}{TARGET_ANSWERED}{described['response']}"
    return str(described["message"])


def error_line(described: dict[str, Any]) -> str:
    return f"{described['reason']}: {described['message']}"


def release_due_retries(store: Store, *, limit: int = 500) -> int:
    """Queue again every retrying delivery whose time has come; returns how many."""
    now = utc_now()
    with store.transaction() as session:
        query = (select(DeliveryRecord).where(DeliveryRecord.state == "retrying",
                                              DeliveryRecord.next_attempt_at <= now)
                 .order_by(DeliveryRecord.next_attempt_at).limit(limit))
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        due = session.scalars(query).all()
        for delivery in due:
            delivery.state, delivery.updated_at = "pending", now
        enqueue_deliveries(session, (DeliveryPointer(delivery.id, delivery.target, delivery.event_id,
                                                     delivery.case_pk) for delivery in due), now)
    return len(due)


def requeue_open_deliveries(store: Store) -> int:
    """Queue again every real-time delivery that still has work to do; returns how many.

    For a transport that keeps its queues in the process (the embedded default): a restart empties them, so
    what was queued, or in flight, when the last process stopped would otherwise wait for the stale sweep. A
    delivery that was in flight is resumed (its worker is gone): the target is asked before it is sent again.
    """
    now = utc_now()
    with store.transaction() as session:
        rows = session.execute(
            select(DeliveryRecord.id, DeliveryRecord.target, DeliveryRecord.event_id, DeliveryRecord.case_pk,
                   DeliveryRecord.state)
            .where(DeliveryRecord.mode == "realtime", DeliveryRecord.state.in_(("pending", "in_flight")))
            .order_by(DeliveryRecord.id)
        ).all()
        enqueue_deliveries(session, (DeliveryPointer(row.id, row.target, row.event_id, row.case_pk,
                                                     resume=row.state == "in_flight") for row in rows), now)
    return len(rows)


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
