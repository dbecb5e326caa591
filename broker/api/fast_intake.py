"""The two posting routes' usual case, answered without FastAPI's request machinery.

A CRM's ``POST /v1/cases`` (or ``/v1/cases/{case_id}/events``) is nearly always a well-formed envelope with a
known key. For those, FastAPI's routing, dependency solving, body parsing in two passes and response-model
serialisation cost more CPU than the rest of the request together. This middleware sits inside the gate (so the key,
the rate, the body limit and the in-flight bound are already checked) and in front of the FastAPI routes:

- an envelope that validates, whose ``source`` is the key's system, whose URL matches it, and whose
  ``Idempotency-Key`` (if any) is a single header within its limit, goes straight to intake, and its receipt is
  written as the route would write it;
- anything else is handed to the FastAPI route with the body replayed, so every refusal is the documented one
  (the same handler, the same body, the same metrics) and the OpenAPI description stays the routes' own.

An intake refusal or a store outage after the envelope was taken is answered by the same functions the app's
exception handlers use; anything unexpected is raised, as a route's error would be.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.api.errors import UNAVAILABLE_ERRORS, log_unavailable, rejected_content, unavailable_content
from broker.api.limits import replay
from broker.errors import IntakeRejected
from broker.intake.transaction import Receipt
from broker.model.events import CaseCreated, FollowUpEvent
from broker.store.keys import Caller

#: Takes an event from a caller with an idempotency key, answers its receipt once durably recorded.
Accept = Callable[[CaseCreated | FollowUpEvent, Caller, str | None], Awaitable[Receipt]]
#: The receipt as the route's response model writes it (JSON bytes).
WriteReceipt = Callable[[Receipt], bytes]

_follow_up: TypeAdapter[FollowUpEvent] = TypeAdapter(FollowUpEvent)
_JSON = (b"content-type", b"application/json")
#: The route's ``Header(max_length=200)``.
IDEMPOTENCY_KEY_LIMIT = 200


class FastIntake:
    def __init__(self, app: ASGIApp, *, accept: Accept, write_receipt: WriteReceipt) -> None:
        self.app = app
        self.accept = accept
        self.write_receipt = write_receipt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        url_case_id = _posting_route(scope)
        caller = scope.get("state", {}).get("caller") if url_case_id is not None else None
        if not isinstance(caller, Caller) or url_case_id is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        message = await receive()
        body = message.get("body", b"") if message["type"] == "http.request" else b""
        whole = message["type"] == "http.request" and not message.get("more_body", False)
        event = _valid_event(body, url_case_id) if whole else None
        judged, idempotency_key = _idempotency_key(scope)
        if event is None or not judged or event.source != caller.system:
            await self.app(scope, replay(message, receive), send)  # the route answers, with its own refusal
            return
        try:
            receipt = await self.accept(event, caller, idempotency_key)
        except IntakeRejected as exc:
            status, refusal = rejected_content(exc)
            await _respond(send, status, json_body(refusal))
            return
        except UNAVAILABLE_ERRORS as exc:
            log_unavailable(scope["path"], exc)
            status, outage, headers = unavailable_content()
            await _respond(send, status, json_body(outage), headers)
            return
        await _respond(send, 202, self.write_receipt(receipt))


def _posting_route(scope: Scope) -> str | None:
    """"" for ``POST /v1/cases``, the case id for ``POST /v1/cases/{case_id}/events``, None for anything else."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if path == "/v1/cases":
        return ""
    parts = path.split("/")
    if len(parts) == 5 and parts[:3] == ["", "v1", "cases"] and parts[3] and parts[4] == "events":
        return parts[3]
    return None


def _is_json(scope: Scope) -> bool:
    types = [value for name, value in scope["headers"] if name == b"content-type"]
    return len(types) == 1 and types[0].split(b";")[0].strip().lower() == b"application/json"


def _valid_event(body: bytes, url_case_id: str) -> CaseCreated | FollowUpEvent | None:
    try:
        if not url_case_id:
            return CaseCreated.model_validate_json(body)
        event = _follow_up.validate_json(body)
    except ValidationError:
        return None
    return event if event.case_id == url_case_id else None


def _idempotency_key(scope: Scope) -> tuple[bool, str | None]:
    """(usable?, the header's value or None when absent): not usable when the route must judge it (repeated, too
    long)."""
    values = [value for name, value in scope["headers"] if name == b"idempotency-key"]
    if len(values) > 1:
        return False, None
    value = values[0].decode("latin-1") if values else None
    return value is None or len(value) <= IDEMPOTENCY_KEY_LIMIT, value


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-length", str(len(body)).encode()), _JSON, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def json_body(value: Any) -> bytes:
    """What Starlette's JSONResponse writes for ``value`` (so both paths answer byte for byte alike)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
