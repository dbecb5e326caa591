"""Follow-ups that arrive before their case: held back, not refused, then taken in right behind it.

Over AMQP a sender's events can overtake each other (a create published over HTTP and its update over AMQP, a
message returned to the queue when a worker stopped). A follow-up for a case not yet known is recorded here, and
any later follow-up of the same case queues behind it. When the case's ``case.created`` is taken in, its held
follow-ups go in with it, in the same transaction, in the order they arrived. A held follow-up whose case has not
come within the bound (``hold_unknown_case_seconds``) is failed with the reason, its body kept for a replay, and
linked into the case's history should the case come later.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, and_, delete, insert, or_, select, text, tuple_, update
from sqlalchemy.orm import Session

from broker.model.events import utc_now
from broker.store.bulk import any_of, in_list
from broker.store.database import Store, is_postgres
from broker.store.tables import UNLINKED_REFUSAL, AuditEntry, CaseRecord, FailedMessage, HeldEvent, table

log = structlog.get_logger("casebridge.intake.held")

Key = tuple[str, str]
#: Why a held follow-up is failed in the end.
REASON = "rejected"


@dataclass(frozen=True)
class HeldRow:
    """A held follow-up, as stored (or about to be)."""

    id: int | None
    event_id: str
    source: str
    case_ref: str
    via: str
    actor: str
    idempotency_key: str | None
    payload: dict[str, Any]
    raw_body: bytes | None
    received_at: datetime
    expires_at: datetime

    @classmethod
    def from_values(cls, values: dict[str, Any], row_id: int | None = None) -> HeldRow:
        return cls(id=row_id, **{name: values[name] for name in _FIELDS})


_FIELDS = ("event_id", "source", "case_ref", "via", "actor", "idempotency_key", "payload", "raw_body",
           "received_at", "expires_at")


def already_held(session: Session, keys: set[Key], event_ids: set[str]) -> tuple[set[Key], set[str]]:
    """Which of these (source, case id) pairs have follow-ups held, and which of these events are held already
    (a sender's resend of a held follow-up is a duplicate): one query for both."""
    if not keys and not event_ids:
        return set(), set()
    rows = session.connection().execute(_lookups(is_postgres(session)).held, {
        "sources": list({source for source, _ in keys}), "case_refs": list({case_ref for _, case_ref in keys}),
        "event_ids": list(event_ids)}).all()
    return ({(row.source, row.case_ref) for row in rows} & keys,
            {row.event_id for row in rows} & event_ids)


@dataclass(frozen=True)
class _Lookups:
    """Built once and run with their values bound: intake asks them in every transaction."""

    held: Select[Any]
    refused_before_case: Select[Any]


@functools.cache
def _lookups(postgres: bool) -> _Lookups:
    held, failed = table(HeldEvent).c, table(FailedMessage).c
    return _Lookups(
        held=select(held.source, held.case_ref, held.event_id).where(or_(
            and_(in_list(held.source, "sources", postgres=postgres),
                 in_list(held.case_ref, "case_refs", postgres=postgres)),
            in_list(held.event_id, "event_ids", postgres=postgres))),
        # The condition as literal text, so that the planner sees the partial index's own predicate.
        refused_before_case=select(failed.id, failed.source, failed.case_ref, failed.event_id, failed.reason).where(
            text(UNLINKED_REFUSAL), in_list(failed.source, "sources", postgres=postgres),
            in_list(failed.case_ref, "case_refs", postgres=postgres)),
    )


def take_held(session: Session, keys: Iterable[Key]) -> list[HeldRow]:
    """The held follow-ups of these cases, in the order they arrived, locked; the caller deletes them."""
    wanted = set(keys)
    if not wanted:
        return []
    query = (select(HeldEvent).where(tuple_(HeldEvent.source, HeldEvent.case_ref).in_(sorted(wanted)))
             .order_by(HeldEvent.id))
    if is_postgres(session):
        query = query.with_for_update()
    return [_row(held) for held in session.scalars(query)]


def forget(session: Session, held_ids: Iterable[int]) -> None:
    ids = [held_id for held_id in held_ids if held_id is not None]
    if ids:
        session.execute(delete(HeldEvent).where(any_of(session, HeldEvent.id, ids)))


def link_refused(session: Session, cases: dict[Key, str], now: datetime) -> None:
    """A case has arrived: its follow-ups refused earlier (their hold ran out) join its history."""
    rows = session.connection().execute(_lookups(is_postgres(session)).refused_before_case, {
        "sources": list({source for source, _ in cases}), "case_refs": list({case_ref for _, case_ref in cases})}).all()
    found = [row for row in rows if (row.source, row.case_ref) in cases]
    if not found:
        return
    for row in found:
        session.execute(update(FailedMessage).where(FailedMessage.id == row.id)
                        .values(case_pk=cases[(row.source, row.case_ref)]))
    session.execute(insert(AuditEntry), [
        {"case_pk": cases[(row.source, row.case_ref)], "event_id": row.event_id, "target": None,
         "step": "refused_before_case", "actor": "casebridge", "at": now,
         "detail": {"failed_message": row.id, "reason": row.reason,
                    "message": "this event came before its case and was refused when its hold ran out: "
                               "replay it from the failed messages"}}
        for row in found
    ])


def refuse_released(session: Session, row: HeldRow, refused: Any, now: datetime) -> None:
    """A held follow-up that its case's arrival let in, refused all the same (nobody waits for the answer)."""
    session.add(FailedMessage(
        stage="intake", event_id=row.event_id, error_class="invalid", reason=REASON,
        error_text=f"{refused.field}: {refused.message}", raw_body=row.raw_body, attempts=1,
        first_failed_at=row.received_at, last_failed_at=now, source=row.source, case_ref=row.case_ref,
    ))


def release_and_expire(store: Store, take_in: Callable[[list[HeldRow]], object], *,
                       limit: int = 500) -> tuple[int, int]:
    """Take in (``take_in``, the intake's) held follow-ups whose case has meanwhile arrived; fail those whose
    hold ran out.

    Returns (taken in, failed). The first path is for a race: a case created in another transaction just as a
    follow-up was held. Run every poll by the outbox relay.
    """
    now = utc_now()
    with store.read() as session:
        rows = session.execute(select(HeldEvent.source, HeldEvent.case_ref, HeldEvent.expires_at)
                               .order_by(HeldEvent.id).limit(limit)).all()
        if not rows:
            return 0, 0
        keys = {(row.source, row.case_ref) for row in rows}
        known = {(case.source, case.case_id) for case in session.execute(
            select(CaseRecord.source, CaseRecord.case_id)
            .where(any_of(session, CaseRecord.case_id, {case_ref for _, case_ref in keys})))}
    arrived = keys & known
    expired = {(row.source, row.case_ref) for row in rows if row.expires_at <= now} - arrived
    released = _take_in(store, take_in, arrived) if arrived else 0
    failed = _expire(store, expired, now) if expired else 0
    return released, failed


def _take_in(store: Store, take_in: Callable[[list[HeldRow]], object], keys: set[Key]) -> int:
    with store.read() as session:
        rows = take_held(session, keys)
    if not rows:
        return 0
    take_in(rows)
    log.info("held.released", count=len(rows))
    return len(rows)


def _expire(store: Store, keys: set[Key], now: datetime) -> int:
    with store.transaction() as session:
        rows = take_held(session, keys)
        if not rows:
            return 0
        for row in rows:
            message = (f"no case {row.case_ref!r} from source {row.source!r} arrived within "
                       f"{(row.expires_at - row.received_at).total_seconds():.0f} s of this event (held from "
                       f"{row.received_at.isoformat(timespec='seconds')})")
            session.add(FailedMessage(
                stage="intake", event_id=row.event_id, error_class="invalid", reason=REASON,
                error_text=f"case.case_id: {message}", raw_body=row.raw_body, attempts=1,
                first_failed_at=row.received_at, last_failed_at=now, source=row.source, case_ref=row.case_ref,
            ))
            session.add(AuditEntry(event_id=row.event_id, step="refused", actor="casebridge", at=now,
                                   detail={"reason": REASON, "message": message}))
        forget(session, [row.id for row in rows if row.id is not None])
    log.warning("held.expired", count=len(rows))
    return len(rows)


def _row(held: HeldEvent) -> HeldRow:
    return HeldRow(id=held.id, event_id=held.event_id, source=held.source, case_ref=held.case_ref, via=held.via,
                   actor=held.actor, idempotency_key=held.idempotency_key, payload=held.payload,
                   raw_body=held.raw_body, received_at=held.received_at, expires_at=held.expires_at)
