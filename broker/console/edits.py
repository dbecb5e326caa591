"""Edit and replay: correct a field of a failed message, validated against the canonical model, then send it again.

The original and the edit are both kept (``message_edits``) and the difference goes into the audit trail. For a
delivery failure the edit is applied to the stored event the delivery sends; for an intake failure, to the body
as received, which is then taken in again.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert

from broker.errors import CasebridgeError
from broker.failures.actions import lock_open_failure
from broker.model.events import EVENT_ADAPTER, utc_now
from broker.store.database import Store
from broker.store.tables import AuditEntry, EventRecord, FailedMessage, MessageEdit


@dataclass(frozen=True)
class EditableField:
    path: tuple[str, ...]
    label: str
    hint: str
    number: bool = False

    @property
    def name(self) -> str:
        return ".".join(self.path)


#: The fields support staff may correct: the usual culprits when a target refuses a case.
FIELDS = (
    EditableField(("case", "service_code"), "Service code", "The council's service, e.g. highways.pothole"),
    EditableField(("case", "description"), "Description", "What the reporter said"),
    EditableField(("case", "location", "easting"), "Easting", "British National Grid, 0 to 700000", number=True),
    EditableField(("case", "location", "northing"), "Northing", "British National Grid, 0 to 1300000", number=True),
    EditableField(("case", "location", "postcode"), "Postcode", "e.g. SW1A 1AA"),
    EditableField(("case", "location", "address"), "Address", "Street address of the problem"),
    EditableField(("case", "location", "uprn"), "UPRN", "Unique property reference, up to 12 digits"),
)


#: Events that carry a whole case, whose fields can be corrected (the others carry only a reference to one).
EDITABLE_EVENTS = ("case.created", "case.updated")


class EditRefused(CasebridgeError):
    """The edit does not make a valid message; ``errors`` names each field at fault."""

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


def current_message(store: Store, failed_id: int) -> dict[str, Any] | None:
    """The message as it would be sent now (None when it is not readable JSON)."""
    with store.read() as session:
        failed = session.get(FailedMessage, failed_id)
        return _current(session, failed) if failed else None


def _current(session: Any, failed: FailedMessage) -> dict[str, Any] | None:
    if failed.stage == "intake":
        try:
            message = json.loads(failed.raw_body or b"")
        except ValueError:
            return None
    else:
        event = session.get(EventRecord, failed.event_id) if failed.event_id else None
        message = copy.deepcopy(event.payload) if event else None
    return message if isinstance(message, dict) else None


def is_editable(message: dict[str, Any] | None) -> bool:
    return bool(message and message.get("event_type") in EDITABLE_EVENTS and isinstance(message.get("case"), dict))


def field_value(message: dict[str, Any], field: EditableField) -> Any:
    value: Any = message
    for part in field.path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def edit_message(store: Store, failed_id: int, form: dict[str, str], *, actor: str) -> list[dict[str, Any]]:
    """Apply the form's values, validate, keep both versions; returns the difference (empty: nothing changed)."""
    now = utc_now()
    with store.transaction() as session:
        failed = lock_open_failure(session, failed_id)
        original = _current(session, failed)
        if original is None or not is_editable(original):
            raise EditRefused("only a readable case.created or case.updated message can be corrected here")
        edited = copy.deepcopy(original)
        errors: dict[str, str] = {}
        for field in FIELDS:
            if field.name not in form:
                continue
            text = form[field.name].strip()
            value: Any = text or None
            if field.number and text:
                try:
                    value = float(text)
                except ValueError:
                    errors[field.name] = f"{field.label} must be a number"
                    continue
            _set(edited, field.path, value)
        if errors:
            raise EditRefused("the edit is not valid", errors)
        try:
            EVENT_ADAPTER.validate_python(edited)
        except ValidationError as exc:
            raise EditRefused("the edited message is not valid", {
                ".".join(str(part) for part in error["loc"][1:]) or "message": error["msg"]
                for error in exc.errors()
            }) from exc
        diff = [{"field": field.name, "from": field_value(original, field), "to": field_value(edited, field)}
                for field in FIELDS if field_value(original, field) != field_value(edited, field)]
        if not diff:
            return []
        session.add(MessageEdit(failed_id=failed.id, edited_by=actor, at=now, original=original, edited=edited,
                                diff=diff))
        if failed.stage == "intake":
            failed.raw_body = json.dumps(edited).encode()
        else:
            session.get_one(EventRecord, failed.event_id).payload = edited
        session.execute(insert(AuditEntry).values(
            case_pk=failed.case_pk, event_id=failed.event_id, target=failed.target, step="edited", actor=actor,
            detail={"failed_message": failed.id, "diff": diff}, at=now,
        ))
    return diff


def _set(message: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = message
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
