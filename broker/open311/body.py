"""What is checked about an Open311 request's body before its form is parsed.

Open311 sends ``api_key`` inside the form body, so the API's gate cannot check the key before reading the body
(it does for ``/v1/cases``). It still bounds what is read: a body over the limit is refused once the limit is
reached, never read further, and the refusal names the parameter that was being read when it passed the limit (a
5 MB ``description``, say). The key is then checked before anything else is done with the form.

Forms must be UTF-8, percent-encoded as ``application/x-www-form-urlencoded`` says. Starlette's form parser decodes
invalid UTF-8 into replacement characters and reads raw bytes as Latin-1, so such a body is refused here instead,
naming the parameter, before it can be stored garbled.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.limits import Interface, Refusal
from broker.open311.errors import error_document, format_of_path

#: Where the Open311 endpoint is mounted in the API.
PREFIX = "/open311/"

_MULTIPART_NAME = re.compile(rb'[;\s]name="([^"]*)"')


def parameter_being_read(body: bytes) -> str | None:
    """The parameter a body cut short was in the middle of: the last ``name=`` of a form, or the last part's name
    of a multipart body."""
    names = _MULTIPART_NAME.findall(body[-65536:])
    if names:
        return _decoded(names[-1])
    last = body.rsplit(b"&", 1)[-1]
    name = last.split(b"=", 1)[0] if b"=" in last else None
    return _decoded(unquote_to_bytes(name.replace(b"+", b" "))) if name else None


def _decoded(name: bytes) -> str | None:
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and len(text) <= 100 else None


async def answer_refusal(scope: Scope, send: Send, refusal: Refusal) -> None:
    """The API gate's refusal of an Open311 request, as the spec answers: 400, the gate's own status as the code."""
    fmt = format_of_path(scope["path"])
    message = refusal.message
    if refusal.status == 413:
        parameter = parameter_being_read(refusal.received)
        message = (f"{parameter}: too long; " if parameter else "") + message + \
            " (a description is at most 20,000 characters; photos are sent as media_url links)"
    body, content_type = error_document(fmt, [(refusal.status, message)])
    await _send(send, 400, body, content_type, refusal.headers)


GATE = Interface(PREFIX, answer_refusal)


async def _send(send: Send, status: int, body: bytes, content_type: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": body})


def utf8_problem(body: bytes) -> str:
    """Empty if every name and value of a url-encoded form is UTF-8, else a sentence naming the first one that is
    not."""
    if any(byte > 0x7F for byte in body):
        where = parameter_being_read(body[:next(i for i, byte in enumerate(body) if byte > 0x7F)])
        return f"{where or 'the form'}: holds bytes that are not percent-encoded; send UTF-8, percent-encoded"
    for pair in body.split(b"&"):
        name, _, value = pair.partition(b"=")
        for part in (name, value):
            try:
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                shown = _decoded(unquote_to_bytes(name.replace(b"+", b" "))) or "a parameter's name"
                return f"{shown}: is not UTF-8"
    return ""


#: Where :class:`Utf8Guard` leaves what it found wrong with a form, for the endpoint to refuse it with once the
#: API key has been checked (an unknown caller is told about its key, not about its form).
FORM_PROBLEM = "open311_form_problem"


def form_problem(state: object) -> str:
    return str(getattr(state, FORM_PROBLEM, "") or "")


class Utf8Guard:
    """ASGI middleware of the Open311 app: reads a url-encoded form's body (already read whole, and bounded, by the
    API's gate) and notes in the request's state whether it is UTF-8, naming the first parameter that is not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["type"] != "http" or content_type != b"application/x-www-form-urlencoded":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replaying({"type": "http.request", "body": b"".join(chunks),
                                                  "more_body": False}, message, then=receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope.setdefault("state", {})[FORM_PROBLEM] = utf8_problem(body)
        await self.app(scope, _replaying({"type": "http.request", "body": body, "more_body": False}, then=receive),
                       send)


def _replaying(*messages: Message, then: Receive) -> Receive:
    """Hands out ``messages`` once, then defers to the server's own ``then``."""
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0) if pending else await then()

    return receive
