"""``servicerequestupdates``: every status change and public note that reached a system's cases in a window, and
a resident's update taken in as a canonical event.

**Which moment an update is listed at.** An update's ``updated_datetime`` is when Casebridge recorded it (the event's
``received_at``), in whole seconds, and a window lists exactly the updates recorded in it. Not when it happened at
its source (``occurred_at``): a change reaches Casebridge late when a LOB system is polled every few minutes, was
down for hours, or sends a nightly file, and FixMyStreet drops an update whose ``updated_datetime`` falls outside
the window it asked for -- so a change that happened at 09:00 and was recorded at 12:00 would be outside every
two-hour window asked for after 11:00 if it were listed at 09:00, and missed. Listed at 12:00, it is inside the
window of the first poll after it was recorded, and of every poll whose window holds 12:00: whatever the delay,
some poll sees it, as long as each poll's window reaches back to the end of the previous one (FixMyStreet's
two-hour windows every five minutes overlap by 1 h 55 min). The same change is always the same ``update_id`` (its
event's id) with the same ``updated_datetime``, so FixMyStreet, which keeps one comment per ``update_id``, shows
it once however many windows list it.

Which updates: status changes (``case.status_changed``, ``case.closed``, a ``case.updated`` that changed the status),
and notes not marked internal, that came from any source but the system asking -- a resident's own update is never
handed back to the system that sent it. A status change recorded after a later one (``superseded``: neither applied
nor sent on) is listed with the status the case kept, so its text still reaches the resident and the status never
goes back. Each update carries the status the case had once it was applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from broker.model.case import CaseStatus
from broker.model.events import AnyEvent, CaseNoteAdded, CaseStatusChanged, EventType
from broker.open311.reports import LONGEST_TEXT, event_id_for
from broker.open311.statuses import ACCEPTED, after_resident_update, read_sent, update_status
from broker.open311.wire import parse_w3c
from broker.store.bulk import any_of
from broker.store.database import Store
from broker.store.tables import AuditEntry, CaseRecord, EventRecord

_STATUS_EVENTS = (EventType.status_changed.value, EventType.closed.value)
_LISTED = (*_STATUS_EVENTS, EventType.note_added.value, EventType.updated.value)
_HISTORY = (*_LISTED, EventType.created.value)


@dataclass(frozen=True)
class _Listed:
    event_id: str
    case_pk: str
    received_at: datetime


def second_floor(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def updates_between(store: Store, system: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The updates of ``system``'s cases recorded from ``start`` to ``end`` (both included, to the second), in the
    order they were recorded, as ``GET servicerequestupdates`` lists them."""
    low = second_floor(start) + (timedelta(seconds=1) if start.microsecond else timedelta(0))
    high = second_floor(end) + timedelta(seconds=1)
    with store.read() as session:
        listed = [_Listed(row.event_id, row.case_pk, row.received_at) for row in session.execute(
            select(EventRecord.event_id, EventRecord.case_pk, EventRecord.received_at)
            .join(CaseRecord, CaseRecord.id == EventRecord.case_pk)
            .where(CaseRecord.source == system, EventRecord.source != system,
                   EventRecord.received_at >= low, EventRecord.received_at < high,
                   EventRecord.event_type.in_(_LISTED))
            .order_by(EventRecord.received_at, EventRecord.case_pk, EventRecord.sequence)
        )]
        if not listed:
            return []
        case_pks = {item.case_pk for item in listed}
        history = session.execute(
            select(EventRecord.event_id, EventRecord.case_pk, EventRecord.event_type, EventRecord.payload)
            .where(any_of(session, EventRecord.case_pk, case_pks), EventRecord.event_type.in_(_HISTORY))
            .order_by(EventRecord.case_pk, EventRecord.sequence)
        ).all()
        status_ids = {row.event_id for row in history if row.event_type in _STATUS_EVENTS}
        superseded = set(session.scalars(
            select(AuditEntry.event_id).where(AuditEntry.step == "superseded",
                                              any_of(session, AuditEntry.event_id, status_ids))
        )) if status_ids else set()
        numbers = {row.id: row.snapshot.get("attributes", {}).get("fixmystreet_id") for row in session.execute(
            select(CaseRecord.id, CaseRecord.snapshot).where(any_of(session, CaseRecord.id, case_pks)))}
    wanted = {item.event_id for item in listed}
    found: dict[str, dict[str, Any]] = {}
    status: CaseStatus = CaseStatus.open
    case_pk = None
    for row in history:
        if row.case_pk != case_pk:
            case_pk, status = row.case_pk, CaseStatus.open
        listed_as, status = _applied(row.event_type, row.payload, status, row.event_id in superseded)
        if row.event_id in wanted and listed_as is not None:
            found[row.event_id] = listed_as
    updates = []
    for item in listed:
        shown = found.get(item.event_id)
        if shown is None:
            continue  # an internal note, or a case.updated that left the status as it was
        number = numbers.get(item.case_pk)
        updates.append({
            "update_id": item.event_id,
            "service_request_id": f"CB-{item.case_pk}",
            "status": shown["status"],
            "updated_datetime": second_floor(item.received_at),
            "description": shown["description"],
            "media_url": "",
            "external_status_code": shown["external_status_code"],
            **({"fixmystreet_id": number} if isinstance(number, str) and number.isdigit() else {}),
        })
    return updates


def _applied(event_type: str, payload: dict[str, Any], status: CaseStatus,
             superseded: bool) -> tuple[dict[str, Any] | None, CaseStatus]:
    """What the event lists as (None: nothing), and the case's status once it was applied."""
    if event_type == EventType.created.value:
        return None, CaseStatus(payload["case"].get("status", "open"))
    if event_type == EventType.updated.value:
        after = CaseStatus(payload["case"].get("status", status.value))
        shown = None if after == status else {"status": update_status(after), "description": "",
                                               "external_status_code": ""}
        return shown, after
    if event_type == EventType.note_added.value:
        note = payload["note"]
        shown = None if note.get("internal") else {"status": update_status(status), "description": note["text"],
                                                   "external_status_code": ""}
        return shown, status
    change = payload["change"]
    if superseded:  # neither applied nor sent on: its words reach the resident, the status stays
        return {"status": update_status(status), "description": change.get("reason") or "",
                "external_status_code": ""}, status
    after = CaseStatus(change["status"])
    return {"status": update_status(after), "description": change.get("reason") or "",
            "external_status_code": change.get("external_status_code") or ""}, after


@dataclass(frozen=True)
class UpdateForm:
    """The parameters of ``POST servicerequestupdates``, each None when absent or empty."""

    update_id: str | None = None
    service_request_id: str | None = None
    status: str | None = None
    updated_datetime: str | None = None
    description: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    media_urls: tuple[str, ...] = ()


def check_update(form: UpdateForm) -> tuple[list[tuple[str, str]], datetime | None]:
    """What is wrong with the form, parameter by parameter, and the update's time if it could be read."""
    problems: list[tuple[str, str]] = []
    for name in ("update_id", "service_request_id", "status", "updated_datetime"):
        if getattr(form, name) is None:
            problems.append((name, "required"))
    if form.update_id is not None and len(form.update_id) > 100:
        problems.append(("update_id", "longer than 100 characters"))
    if form.status is not None and not read_sent(form.status)[0]:
        problems.append(("status", f"not a status this endpoint knows ({', '.join(ACCEPTED)})"))
    moment = None
    if form.updated_datetime is not None:
        try:
            moment = parse_w3c(form.updated_datetime)
        except ValueError as exc:
            problems.append(("updated_datetime", str(exc)))
    if form.description is not None and len(form.description) > LONGEST_TEXT:
        problems.append(("description", f"longer than {LONGEST_TEXT:,} characters"))
    if any(not url.startswith(("http://", "https://")) or len(url) > 2000 for url in form.media_urls):
        problems.append(("media_url", "must be an http or https URL"))
    return problems, moment


def resident_update(system: str, case_id: str, current: CaseStatus, form: UpdateForm,
                    moment: datetime) -> AnyEvent:
    """A resident's update as a canonical event on the case: a status change when it moves the case to another
    status (a reopen, say), otherwise a note. Its event id is derived from the sender's ``update_id``, so the same
    update sent again is the same event; ValueError (naming the parameter) when it says nothing."""
    assert form.update_id is not None and form.status is not None
    text = "\n\n".join(part for part in (form.description, *form.media_urls) if part) or None
    author = " ".join(part for part in (form.first_name, form.last_name) if part and part != "-") or None
    envelope: dict[str, Any] = {"event_id": event_id_for(system, "update", form.update_id), "occurred_at": moment,
                                "source": system, "case": {"case_id": case_id}}
    moved_to = after_resident_update(form.status, current)
    if moved_to is not None:
        return CaseStatusChanged.model_validate({**envelope, "change": {"status": moved_to, "reason": text}})
    if text is None:
        raise ValueError("description: required: the update changes no status and carries no text or photo")
    return CaseNoteAdded.model_validate({**envelope, "note": {"text": text, "author": author}})
