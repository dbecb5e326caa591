"""One failed message in full: the error, the message we sent, what came back, its attempts, edits and timeline.

Personal data (the reporter, the description, notes, the attributes a form collected) is shown to operators only;
viewers see it blanked. What a LOB system answered may quote any of it (a truncated echo of the description
cannot be recognised), so viewers never see an answer; an error text that quotes a personal value is blanked too.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from broker.errors import CasebridgeError
from broker.failures.actions import discard, link_to_record, replay
from broker.failures.queries import FailedView, show_failed
from broker.intake.transaction import Intake
from broker.store.cases import HistoryEntry, case_history
from broker.store.database import Store
from broker.store.deliveries import TARGET_ANSWERED
from broker.store.tables import AuditEntry, CaseRecord, FailedMessage, MessageEdit

from .edits import current_message, is_editable

HIDDEN = "(hidden: personal data)"
RESPONSE_HIDDEN = "(hidden: the system's answer may quote personal data)"
#: A personal value this long or longer is recognised by its start too (a LOB system may echo it truncated).
_PREFIX = 20
_PERSONAL_CASE_FIELDS = ("description",)
_PEOPLE = ("person", "representative", "on_behalf_of")
#: Editable fields that can hold personal data (free text written by the reporter).
PERSONAL_FIELDS = ("case.description",)


class EditView(BaseModel):
    edited_by: str
    at: datetime
    diff: list[dict[str, Any]]


class MessageDetail(BaseModel):
    failed: FailedView
    case_pk: str | None
    message: dict[str, Any] | None
    response: str | None
    editable: bool
    edits: list[EditView]
    timeline: list[HistoryEntry]


class DiscardRefused(CasebridgeError):
    """A discard needs a reason, for the audit trail."""


def message_detail(store: Store, failed_id: int, *, personal: bool) -> MessageDetail | None:
    view = show_failed(store, failed_id)
    if view is None:
        return None
    message = current_message(store, failed_id)
    with store.read() as session:
        failed = session.get_one(FailedMessage, failed_id)
        failure = session.scalars(select(AuditEntry).where(
            AuditEntry.event_id == failed.event_id, AuditEntry.target == failed.target,
            AuditEntry.step.in_(("failed", "attempt_failed", "retry_scheduled")),
        ).order_by(AuditEntry.id.desc()).limit(1)).first() if failed.event_id else None
        edits = [EditView(edited_by=e.edited_by, at=e.at, diff=e.diff) for e in session.scalars(
            select(MessageEdit).where(MessageEdit.failed_id == failed_id).order_by(MessageEdit.id))]
        case = session.get(CaseRecord, failed.case_pk) if failed.case_pk else None
    editable = is_editable(message)
    if message is None and view.raw_body and personal:
        message = {"as received": view.raw_body}
    view.raw_body = view.raw_body if personal else (HIDDEN if view.raw_body else None)
    timeline = case_history(store, case).entries if case else []
    response = failure.detail.get("response") if failure else None
    if not personal:
        values = personal_values(message or (case.snapshot if case else None) or {})
        view.error_text = _blank_if_quoting(_without_the_answer(view.error_text), values)
        view.attempt_history = [attempt.model_copy(update={"message": _blank_if_quoting(attempt.message, values)})
                                for attempt in view.attempt_history]
        response = RESPONSE_HIDDEN if response is not None else None
    return MessageDetail(
        failed=view, case_pk=case.id if case else None,
        message=message if personal or message is None else redact(message),
        response=str(response) if response is not None else None, editable=editable,
        edits=edits if personal else [hide_edit(edit) for edit in edits],
        timeline=timeline if personal else [hide_entry(entry) for entry in timeline],
    )


def personal_values(message: dict[str, Any]) -> list[str]:
    """The texts in a message (or a case snapshot) that are personal data, as ``redact`` blanks them."""
    case = message.get("case") if "case" in message else message
    found: list[Any] = []
    if isinstance(case, dict):
        found += [case.get(name) for name in _PERSONAL_CASE_FIELDS]
        location = case.get("location")
        if isinstance(location, dict):
            found += [location.get("address"), location.get("description")]
        reporter = case.get("reporter")
        for key in _PEOPLE:
            person = reporter.get(key) if isinstance(reporter, dict) else None
            if isinstance(person, dict):
                found += list(person.values())
        attributes = case.get("attributes")
        if isinstance(attributes, dict):
            for value in attributes.values():
                found += value if isinstance(value, list) else [value]
    for key in ("note", "change"):
        part = message.get(key)
        if isinstance(part, dict):
            found += [part.get(name) for name in ("text", "notes", "reason")]
    return [value for value in found if isinstance(value, str) and len(value.strip()) >= 3]


def _without_the_answer(text: str) -> str:
    """A failure's text with the target's own answer (which may echo the case) replaced by a note, for viewers."""
    said, answered, _answer = text.partition(TARGET_ANSWERED)
    return f"{said}{answered}{RESPONSE_HIDDEN}" if answered else text


def _blank_if_quoting(text: str | None, values: list[str]) -> str:
    """``text``, or HIDDEN if it quotes any of ``values`` (whole, or the start of a long one)."""
    if not text:
        return text or ""
    folded = text.casefold()
    for value in values:
        needle = value.strip().casefold()
        if needle in folded or (len(needle) >= _PREFIX and needle[:_PREFIX] in folded):
            return HIDDEN
    return text


def redact(message: dict[str, Any]) -> dict[str, Any]:
    """The message with personal data blanked, for viewers."""
    hidden = copy.deepcopy(message)
    case = hidden.get("case")
    if isinstance(case, dict):
        for name in _PERSONAL_CASE_FIELDS:
            if name in case:
                case[name] = HIDDEN
        location = case.get("location")
        if isinstance(location, dict):
            for name in ("address", "description"):
                if name in location:
                    location[name] = HIDDEN
        attributes = case.get("attributes")
        if isinstance(attributes, dict):  # a form's answers: free text as often as not
            case["attributes"] = dict.fromkeys(attributes, HIDDEN)
        reporter = case.get("reporter")
        if isinstance(reporter, dict):
            for key in _PEOPLE:
                if key in reporter:
                    reporter[key] = HIDDEN
    for key in ("note", "change"):
        part = hidden.get(key)
        if isinstance(part, dict):
            for name in ("text", "notes", "reason"):
                if name in part:
                    part[name] = HIDDEN
    return hidden


def hide_edit(edit: EditView) -> EditView:
    return edit.model_copy(update={"diff": _hidden_diff(edit.diff)})


def hide_entry(entry: HistoryEntry) -> HistoryEntry:
    """A timeline entry for a viewer: a correction's old and new values of personal fields are blanked, and so is
    what a LOB system answered."""
    if "diff" not in entry.detail and "response" not in entry.detail:
        return entry
    detail = dict(entry.detail)
    if "diff" in detail:
        detail["diff"] = _hidden_diff(detail["diff"])
    if "response" in detail:
        detail["response"] = RESPONSE_HIDDEN
    return entry.model_copy(update={"detail": detail})


def _hidden_diff(diff: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**change, "from": HIDDEN, "to": HIDDEN} if change.get("field") in PERSONAL_FIELDS else change
            for change in diff]


def replay_one(store: Store, intake: Intake, failed_id: int, *, actor: str,
               wake_relay: Any = None) -> str:
    outcome = replay(store, intake, failed_id, actor=actor)
    if callable(wake_relay):
        wake_relay()
    return outcome


def link_one(store: Store, failed_id: int, *, external_ref: str, actor: str,
             wake_relay: Any = None) -> str:
    """Record a failed delivery as delivered to the LOB record a support officer found."""
    outcome = link_to_record(store, failed_id, external_ref=external_ref, actor=actor)
    if callable(wake_relay):
        wake_relay()  # the case's later events go on to that record
    return outcome


def create_anyway(store: Store, intake: Intake, failed_id: int, *, actor: str,
                  wake_relay: Any = None) -> str:
    """Send a create that may have landed without asking the target first: the officer looked, and it is not there."""
    outcome = replay(store, intake, failed_id, actor=actor, create_anyway=True)
    if callable(wake_relay):
        wake_relay()
    return outcome


def discard_with_reason(store: Store, failed_id: int, *, actor: str, reason: str | None,
                        wake_relay: Any = None) -> None:
    reason = (reason or "").strip()
    if not reason:
        raise DiscardRefused("say why you are discarding this message")
    discard(store, failed_id, actor=actor, reason=reason[:2000])
    if callable(wake_relay):
        wake_relay()


def timeline_for(store: Store, case_pk: str, *, personal: bool) -> tuple[CaseRecord, list[HistoryEntry]] | None:
    with store.read() as session:
        case = session.get(CaseRecord, case_pk)
    if case is None:
        return None
    entries = case_history(store, case).entries
    return case, entries if personal else [hide_entry(entry) for entry in entries]
