"""Answering "what happened to case X?" from the store alone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, select

from broker.store.database import Store
from broker.store.tables import AuditEntry, CaseRecord, DeliveryRecord, EventRecord, ExternalRef


class DeliveryView(BaseModel):
    target: str
    event_id: str
    event_type: str
    mode: str
    state: str
    attempts: int
    external_ref: str | None
    last_error: str | None
    updated_at: datetime
    delivered_at: datetime | None


class CaseView(BaseModel):
    case_id: str
    source: str
    service_code: str
    status: str
    created_at: datetime
    updated_at: datetime
    targets: list[str]
    external_refs: dict[str, str]
    deliveries: list[DeliveryView]


class HistoryEntry(BaseModel):
    at: datetime
    step: str
    actor: str
    event_id: str | None
    target: str | None
    detail: dict[str, Any]


class CaseHistory(BaseModel):
    case_id: str
    source: str
    entries: list[HistoryEntry]


def find_case(store: Store, case_id: str, source: str | None = None) -> list[CaseRecord]:
    """Cases with this sender reference (one per source), or our own reference ``CB-<uuid>``."""
    with store.read() as session:
        query = select(CaseRecord).where(or_(
            CaseRecord.case_id == case_id, CaseRecord.id == case_id.removeprefix("CB-")
        ))
        if source is not None:
            query = query.where(CaseRecord.source == source)
        return list(session.scalars(query.order_by(CaseRecord.created_at)))


def case_view(store: Store, case: CaseRecord) -> CaseView:
    with store.read() as session:
        rows = session.execute(
            select(DeliveryRecord, EventRecord.event_type)
            .join(EventRecord, EventRecord.event_id == DeliveryRecord.event_id)
            .where(DeliveryRecord.case_pk == case.id)
            .order_by(EventRecord.sequence, DeliveryRecord.id)
        ).all()
        refs = {
            target: reference
            for target, reference in session.execute(
                select(ExternalRef.target, ExternalRef.reference).where(ExternalRef.case_pk == case.id)
            )
        }
    deliveries = [
        DeliveryView(
            target=row.DeliveryRecord.target, event_id=row.DeliveryRecord.event_id, event_type=row.event_type,
            mode=row.DeliveryRecord.mode, state=row.DeliveryRecord.state, attempts=row.DeliveryRecord.attempts,
            external_ref=row.DeliveryRecord.external_ref, last_error=row.DeliveryRecord.last_error,
            updated_at=row.DeliveryRecord.updated_at, delivered_at=row.DeliveryRecord.delivered_at,
        )
        for row in rows
    ]
    return CaseView(
        case_id=case.case_id, source=case.source, service_code=case.service_code, status=case.status,
        created_at=case.created_at, updated_at=case.updated_at,
        targets=sorted({delivery.target for delivery in deliveries}), external_refs=refs, deliveries=deliveries,
    )


def case_history(store: Store, case: CaseRecord) -> CaseHistory:
    with store.read() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.case_pk == case.id).order_by(AuditEntry.at, AuditEntry.id)
        ).all()
    return CaseHistory(
        case_id=case.case_id, source=case.source,
        entries=[
            HistoryEntry(at=e.at, step=e.step, actor=e.actor, event_id=e.event_id, target=e.target, detail=e.detail)
            for e in entries
        ],
    )
