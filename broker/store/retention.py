"""Retention: what the store keeps, and for how long (``CASEBRIDGE_RETENTION_*``), purged in small batches.

- **Personal data of closed cases** (descriptions, reporters, notes, attributes, attachments' URLs, addresses) is
  removed ``payload_days`` after the case last changed while closed, and only once every delivery of the case has
  settled. The case, its events and their times stay; a location keeps only what is not about a person (a street
  reference, or the grid square).
- **Audit entries** of closed cases (and those of refused messages, which belong to no case) are deleted after
  ``audit_days`` (longer than ``payload_days``).
- **Failed messages** that were handled (replayed, linked, discarded) are deleted ``failed_days`` after that.

Open cases and failed messages not yet handled are never touched. Each batch is its own short transaction, so
intake and delivery carry on while a large backlog is purged; the job reports what it removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, exists, select, update

from broker.model.events import CLOSING_STATUSES, utc_now
from broker.store.bulk import any_of, insert_rows
from broker.store.database import Store
from broker.store.tables import (
    AuditEntry,
    CaseRecord,
    DeliveryRecord,
    EventRecord,
    FailedMessage,
    MessageEdit,
    ReplayJobItem,
)

log = structlog.get_logger("casebridge.retention")

REMOVED = "(removed under the retention policy)"
CLOSED = tuple(status.value for status in CLOSING_STATUSES)
#: Deliveries in these states still need their event as it was.
UNSETTLED = ("pending", "waiting", "in_flight", "retrying", "unconfirmed", "batch_pending")


@dataclass(frozen=True)
class RetentionPolicy:
    payload_days: float
    audit_days: float
    failed_days: float
    #: Rows a batch takes (one short transaction each).
    batch_rows: int = 5_000


def purge(store: Store, policy: RetentionPolicy, *, now: datetime | None = None,
          progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Purge what the policy says may go; returns what was removed and how long the longest batch took."""
    now = now or utc_now()
    batches: list[float] = []

    def timed(step: Callable[[], int]) -> int:
        started = time.monotonic()
        count = step()
        batches.append(time.monotonic() - started)
        return count

    totals = {"cases_purged": 0, "audit_entries_deleted": 0, "failed_messages_deleted": 0}
    audit = _AuditSweep(store, now - timedelta(days=policy.audit_days), policy.batch_rows)
    for key, step in (
        ("cases_purged", lambda: _purge_cases(store, now - timedelta(days=policy.payload_days), policy.batch_rows)),
        ("audit_entries_deleted", audit.next_batch),
        ("failed_messages_deleted", lambda: _delete_failed(store, now - timedelta(days=policy.failed_days),
                                                           policy.batch_rows)),
    ):
        while (count := timed(step)) > 0:
            totals[key] += count
            if progress is not None:
                progress(key, totals[key])
    summary: dict[str, Any] = {**totals, "batches": len(batches),
                               "longest_batch_seconds": round(max(batches, default=0.0), 3)}
    log.info("retention.purged", **summary)
    return summary


def _purge_cases(store: Store, closed_before: datetime, limit: int) -> int:
    """One batch: closed cases, settled, unchanged since ``closed_before``, not yet purged."""
    limit = max(1, limit // 10)  # a case brings its events with it
    with store.transaction() as session:
        unsettled = exists().where(DeliveryRecord.case_pk == CaseRecord.id, DeliveryRecord.state.in_(UNSETTLED))
        query = (select(CaseRecord).where(CaseRecord.status.in_(CLOSED), CaseRecord.updated_at < closed_before,
                                          CaseRecord.personal_data_purged_at.is_(None), ~unsettled)
                 .order_by(CaseRecord.updated_at).limit(limit))
        if store.is_postgres:
            query = query.with_for_update(skip_locked=True)
        cases = list(session.scalars(query))
        if not cases:
            return 0
        now = utc_now()
        ids = [case.id for case in cases]
        for case in cases:
            case.snapshot = purged_case(case.snapshot)
            case.personal_data_purged_at = now
        for event in session.scalars(select(EventRecord).where(any_of(session, EventRecord.case_pk, ids))):
            event.payload = purged_event(event.payload)
        session.execute(update(MessageEdit).where(MessageEdit.failed_id.in_(
            select(FailedMessage.id).where(any_of(session, FailedMessage.case_pk, ids))))
            .values(original={}, edited={}, diff=[]))
        session.execute(update(FailedMessage).where(any_of(session, FailedMessage.case_pk, ids))
                        .values(raw_body=None))
        insert_rows(session, AuditEntry, [
            {"case_pk": case_id, "event_id": None, "target": None, "step": "personal_data_purged",
             "actor": "retention", "detail": {"policy": "personal data of closed cases"}, "at": now}
            for case_id in ids
        ])
    return len(cases)


class _AuditSweep:
    """Audit entries older than ``before`` of closed cases (or of no case), a batch at a time, oldest first.

    It walks the entries in id order (ids grow with time) from where the last batch stopped, so each batch reads
    only its own rows, however many older entries of open cases it has to leave; it stops at the first batch in
    which every entry is too young.
    """

    def __init__(self, store: Store, before: datetime, limit: int) -> None:
        self.store, self.before, self.limit = store, before, limit
        self.after_id = 0
        self.done = False

    def next_batch(self) -> int:
        """Deletes one batch; returns how many it deleted, 0 once there is nothing more (or only open cases')."""
        while not self.done:
            deleted = self._one()
            if deleted:
                return deleted
        return 0

    def _one(self) -> int:
        with self.store.transaction() as session:
            rows = session.execute(
                select(AuditEntry.id, AuditEntry.at, AuditEntry.case_pk, CaseRecord.status)
                .outerjoin(CaseRecord, CaseRecord.id == AuditEntry.case_pk)
                .where(AuditEntry.id > self.after_id).order_by(AuditEntry.id).limit(self.limit)
            ).all()
            if not rows:
                self.done = True
                return 0
            old = [row for row in rows if row.at < self.before]
            if not old:
                self.done = True  # a whole batch too young: the rest are younger still
            self.after_id = int(rows[-1].id)
            ids = [row.id for row in old if row.case_pk is None or row.status in CLOSED]
            if ids:
                session.execute(delete(AuditEntry).where(any_of(session, AuditEntry.id, ids)))
        return len(ids)


def _delete_failed(store: Store, handled_before: datetime, limit: int) -> int:
    """One batch: failed messages handled before ``handled_before`` (never an open one), with their edits."""
    with store.transaction() as session:
        query = (select(FailedMessage.id).where(FailedMessage.state != "open",
                                                FailedMessage.resolved_at < handled_before)
                 .order_by(FailedMessage.id).limit(limit))
        if store.is_postgres:
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if ids:
            session.execute(delete(MessageEdit).where(any_of(session, MessageEdit.failed_id, ids)))
            session.execute(delete(ReplayJobItem).where(any_of(session, ReplayJobItem.failed_id, ids)))
            session.execute(delete(FailedMessage).where(any_of(session, FailedMessage.id, ids)))
    return len(ids)


def purged_case(case: dict[str, Any]) -> dict[str, Any]:
    """A case as it may be kept: its ids, service, channel, status and dates, and a location that is about no
    person; still a valid case."""
    kept = {key: value for key, value in case.items()
            if key in ("case_id", "service_code", "channel", "status", "external_refs", "wants_updates")}
    return {**kept, "description": REMOVED, "reporter": {"kind": "anonymous"},
            "location": _purged_location(case.get("location") or {}), "attributes": {}, "attachments": []}


def purged_event(payload: dict[str, Any]) -> dict[str, Any]:
    """An event as it may be kept: its envelope, with what it says about people removed."""
    purged = dict(payload)
    case = purged.get("case")
    if isinstance(case, dict) and "description" in case:
        purged["case"] = purged_case(case)
    note = purged.get("note")
    if isinstance(note, dict):
        purged["note"] = {**note, "text": REMOVED, "author": None}
    change = purged.get("change")
    if isinstance(change, dict) and change.get("reason"):
        purged["change"] = {**change, "reason": REMOVED}
    return purged


def _purged_location(location: dict[str, Any]) -> dict[str, Any]:
    if location.get("usrn"):
        return {"usrn": location["usrn"]}
    if location.get("easting") is not None and location.get("northing") is not None:
        return {"easting": float(round(location["easting"], -3)), "northing": float(round(location["northing"], -3))}
    if location.get("lat") is not None and location.get("lon") is not None:
        return {"lat": round(float(location["lat"]), 2), "lon": round(float(location["lon"]), 2)}
    return {"address": REMOVED}
