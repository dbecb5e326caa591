"""``GET requests`` and ``GET requests/{id}``: a system's cases as the spec's service requests.

A case's ``service_request_id`` is Casebridge's own reference for it, ``CB-<case key>``: the reference the LOB
systems are given for it (Confirm's external reference, Uniform's alternative reference) and the console finds it
by. The sender's own reference for the case (FixMyStreet's report number) is accepted in its place when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import false, or_, select

from broker.config.models import ServiceCatalogue
from broker.model.case import CaseStatus
from broker.model.events import EventType
from broker.open311.statuses import CLOSED, spec_status
from broker.store.bulk import any_of
from broker.store.database import Store
from broker.store.tables import AuditEntry, CaseRecord, EventRecord

#: The spec's cap on one answer.
MOST_REQUESTS = 1000
PREFIX = "CB-"


def reference_of(case_pk: str) -> str:
    return f"{PREFIX}{case_pk}"


def find_cases(store: Store, system: str, references: Sequence[str]) -> list[CaseRecord]:
    """``system``'s cases by service_request_id (``CB-<key>``) or by the sender's own reference, in the order
    asked; one not found is left out."""
    wanted = [reference for reference in dict.fromkeys(references) if reference and _storable(reference)][
        :MOST_REQUESTS]
    if not wanted:
        return []
    keys = {reference.removeprefix(PREFIX) for reference in wanted if reference.startswith(PREFIX)}
    with store.read() as session:
        found = list(session.scalars(select(CaseRecord).where(
            CaseRecord.source == system,
            or_(any_of(session, CaseRecord.id, keys) if keys else false(),
                any_of(session, CaseRecord.case_id, set(wanted))),
        )))
    by_reference = {reference_of(case.id): case for case in found} | {case.case_id: case for case in found}
    return list(dict.fromkeys(by_reference[reference] for reference in wanted if reference in by_reference))


def search_cases(store: Store, system: str, *, start: datetime, end: datetime, service_codes: set[str] | None,
                 statuses: set[str] | None) -> list[CaseRecord]:
    """``system``'s cases requested in [start, end], newest first, at most :data:`MOST_REQUESTS`."""
    query = select(CaseRecord).where(CaseRecord.source == system, CaseRecord.created_at >= start,
                                     CaseRecord.created_at <= end)
    if service_codes is not None:
        query = query.where(CaseRecord.service_code.in_(sorted(filter(_storable, service_codes))))
    if statuses is not None and statuses != {"open", "closed"}:
        closed = sorted(status.value for status in CLOSED)
        query = query.where(CaseRecord.status.in_(closed) if statuses == {"closed"} else
                            CaseRecord.status.not_in(closed))
    with store.read() as session:
        return list(session.scalars(query.order_by(CaseRecord.created_at.desc(), CaseRecord.id).limit(MOST_REQUESTS)))


def _storable(text: str) -> bool:
    """Whether a store column could hold it: nothing holds a NUL (and PostgreSQL refuses to be asked about one)."""
    return "\x00" not in text


def request_views(store: Store, catalogue: ServiceCatalogue, cases: Sequence[CaseRecord]) -> list[dict[str, Any]]:
    notes = _status_notes(store, [case.id for case in cases])
    return [_view(catalogue, case, notes.get(case.id, "")) for case in cases]


def _view(catalogue: ServiceCatalogue, case: CaseRecord, notes: str) -> dict[str, Any]:
    snapshot = case.snapshot
    location: dict[str, Any] = snapshot.get("location") or {}
    attributes: dict[str, Any] = snapshot.get("attributes") or {}
    attachments: list[dict[str, Any]] = snapshot.get("attachments") or []
    service = catalogue.services.get(case.service_code)
    return {
        "service_request_id": reference_of(case.id),
        "status": spec_status(CaseStatus(case.status)),
        "status_notes": notes,
        "service_name": service.name if service else case.service_code,
        "service_code": case.service_code,
        "description": snapshot.get("description") or "",
        "requested_datetime": case.created_at,
        "updated_datetime": case.updated_at,
        "address": location.get("address") or location.get("description") or "",
        "address_id": str(attributes.get("address_id") or location.get("uprn") or ""),
        "zipcode": location.get("postcode") or "",
        "lat": location.get("lat", ""),
        "long": location.get("lon", ""),
        "media_url": attachments[0]["url"] if attachments else "",
    }


def _status_notes(store: Store, case_pks: list[str]) -> dict[str, str]:
    """The words of each case's latest status change that was applied (a superseded one never was)."""
    if not case_pks:
        return {}
    with store.read() as session:
        rows = session.execute(
            select(EventRecord.case_pk, EventRecord.event_id, EventRecord.payload)
            .where(any_of(session, EventRecord.case_pk, set(case_pks)),
                   EventRecord.event_type.in_((EventType.status_changed.value, EventType.closed.value)))
            .order_by(EventRecord.case_pk, EventRecord.sequence)
        ).all()
        superseded = set(session.scalars(select(AuditEntry.event_id).where(
            AuditEntry.step == "superseded", any_of(session, AuditEntry.event_id, {row.event_id for row in rows}))))\
            if rows else set()
    notes: dict[str, str] = {}
    for row in rows:
        if row.event_id not in superseded:
            notes[row.case_pk] = row.payload.get("change", {}).get("reason") or ""
    return notes
