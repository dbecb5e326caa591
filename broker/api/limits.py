"""The API's gate: what is checked about a request before any of its body is read.

In order: the framing (a request carrying both ``Content-Length`` and ``Transfer-Encoding`` is refused, as RFC 9112
section 6.3 says a server ought to, since the two can be read differently by the server and by anything in front
of it); the declared size; on the case endpoints, the API key and its rate; then the body itself, counted as it
arrives whatever the headers said, and refused with 413 the moment it passes the limit.

A part of the app that speaks a protocol of its own (Open311, under ``/open311/``) is an :class:`Interface`: the
gate answers its refusals in that protocol's format, and reads a body declared too large up to the limit before
refusing it, so that the answer can say which part of the body passed the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.errors import RETRY_AFTER_OUTAGE
from broker.api.ratelimit import RateLimiter, retry_after
from broker.logging import describe_error
from broker.store.database import is_database_outage
from broker.store.keys import Caller

log = structlog.get_logger("casebridge.api")

#: Paths whose every request needs an API key (the console has its own sign-in; /docs and /health are open).
KEYED_PREFIX = "/v1/cases"


@dataclass(frozen=True)
class Refusal:
    """A request the gate turns away: its HTTP status, a short error name and a sentence for people."""

    status: int
    error: str
    message: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: What of the body had been read when it was refused (empty when refused on its headers alone).
    received: bytes = b""


#: Writes a refusal as an answer, closing the connection after it (any body still coming is not read).
Answer = Callable[[Scope, Send, Refusal], Awaitable[None]]


@dataclass(frozen=True)
class Interface:
    """The paths under ``prefix``, which answer refusals in their own protocol's format with ``answer``."""

    prefix: str
    answer: Answer


class RequestGate:
    """ASGI middleware in front of the whole app.

    ``authenticate`` maps a bearer key to its caller (or None); it runs in a worker thread, as it reads the store.
    The caller found is left in ``scope["state"]["caller"]`` so that the endpoint does not look the key up again.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, authenticate: Callable[[str], Caller | None] | None = None,
                 rate: RateLimiter | None = None, interfaces: Sequence[Interface] = (),
                 cached: Callable[[str], tuple[bool, Caller | None]] | None = None, max_in_flight: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.authenticate = authenticate
        self.rate = rate
        self.interfaces = tuple(interfaces)
        #: A quick look at remembered keys, on the event loop; the store is asked (on a thread) only when it misses.
        self.cached = cached
        #: Keyed requests being handled at most (0: no bound): past it the answer is 503 at once, not a queue.
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        interface = next((each for each in self.interfaces if scope["path"].startswith(each.prefix)), None)
        answer = interface.answer if interface is not None else _problem
        lengths = {value.strip() for name, value in headers if name == b"content-length"}
        if lengths and any(name == b"transfer-encoding" for name, _ in headers):
            await answer(scope, send, Refusal(400, "bad_request",
                                              "a request may carry Content-Length or Transfer-Encoding, not both"))
            return
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            await answer(scope, send, Refusal(400, "bad_request", "the Content-Length header is not one whole number"))
            return
        if lengths and int(next(iter(lengths))) > self.max_bytes and interface is None:
            await answer(scope, send, self._too_large())
            return
        keyed = self.authenticate is not None and scope["path"].startswith(KEYED_PREFIX)
        if keyed and self.max_in_flight and self.in_flight >= self.max_in_flight:
            log.warning("api.overloaded", in_flight=self.in_flight, path=scope["path"])
            await answer(scope, send, Refusal(503, "overloaded", "too many requests are being handled: try again "
                                              "shortly", headers=[(b"retry-after", b"1")]))
            return
        if keyed:
            self.in_flight += 1
        try:
            if keyed:
                caller = await self._caller(scope, send)
                if caller is None:
                    return
                scope.setdefault("state", {})["caller"] = caller
            body = await self._body(receive)
            if isinstance(body, Refusal):
                await answer(scope, send, body)
                return
            await self.app(scope, replay(body, receive), send)
        finally:
            if keyed:
                self.in_flight -= 1

    async def _caller(self, scope: Scope, send: Send) -> Caller | None:
        """The request's caller, or None once it has been answered (401, 429 or 503)."""
        assert self.authenticate is not None
        key = _bearer(scope)
        known, caller = self.cached(key) if key and self.cached is not None else (False, None)
        try:
            if not known:
                caller = await anyio.to_thread.run_sync(self.authenticate, key) if key else None
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            log.error("api.database_unavailable", path=scope["path"], error=describe_error(exc))
            await _answer(send, 503, "unavailable", "the store cannot be reached; try again shortly",
                          headers=[(b"retry-after", RETRY_AFTER_OUTAGE.encode())])
            return None
        if caller is None:
            await _answer(send, 401, "unauthorized", "missing or unknown API key",
                          headers=[(b"www-authenticate", b"Bearer")])
            return None
        wait = self.rate.wait_needed(caller.key_prefix) if self.rate is not None else 0.0
        if wait > 0:
            log.warning("api.rate_limited", system=caller.system, key_prefix=caller.key_prefix)
            await _answer(send, 429, "too_many_requests",
                          f"this API key is over its rate of {self.rate.per_second:g} requests a second"
                          if self.rate else "too many requests", headers=[(b"retry-after", retry_after(wait).encode())])
            return None
        return caller

    async def _body(self, receive: Receive) -> Message | Refusal:
        """The whole body as one message, or the refusal of one too large."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message  # the client went away: let the app see it
            chunk = message.get("body", b"")
            received += len(chunk)
            chunks.append(chunk)
            if received > self.max_bytes:
                return self._too_large(b"".join(chunks)[:self.max_bytes])
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    def _too_large(self, received: bytes = b"") -> Refusal:
        return Refusal(413, "payload_too_large", f"request body exceeds the limit of {self.max_bytes} bytes",
                       received=received)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() or None if scheme.lower() == "bearer" else None
    return None


async def _problem(_scope: Scope, send: Send, refusal: Refusal) -> None:
    await _answer(send, refusal.status, refusal.error, refusal.message, refusal.headers)


async def _answer(send: Send, status: int, error: str, message: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON problem; the connection is closed after it, as any body still coming is not going to be read."""
    body = json.dumps({"error": error, "message": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": body})


def replay(first: Message, receive: Receive) -> Receive:
    """A receive callable that hands out ``first`` once, then defers to the server's own."""
    pending = [first]

    async def replaying_receive() -> Message:
        return pending.pop() if pending else await receive()

    return replaying_receive


def caller_of(state: Any) -> Caller | None:
    """The caller the gate found for this request, if it looked."""
    caller = getattr(state, "caller", None)
    return caller if isinstance(caller, Caller) else None
