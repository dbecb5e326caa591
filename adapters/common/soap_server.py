"""The HTTP side of a SOAP simulator: serving on a thread, refusing SOAP 1.2, and misbehaving on request.

A simulator subclasses :class:`SoapSimulatorServer` and implements :meth:`respond`; tests then tell it to be slow,
to drop a connection, to fail with an HTTP status, or to answer with an entity-expansion bomb, a huge body or a
compression bomb.

Each simulator has two profiles. ``lenient`` answers the way the adapter finds easiest (no namespaces, every
look-up the adapter could wish for, everything echoed back). ``strict`` does only what the product's public
documentation promises, as an independently written server would: namespaced answers, look-ups by the keys the
product documents and no others, optional operations and code lists missing, less echoed back. Adapters are
tested against both.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from adapters.common.soap import CONTENT_TYPE, MalformedXml, UnsafeXml, soap_fault

#: ``lenient``: what the adapter finds easiest; ``strict``: only what the product's documentation promises.
Profile = Literal["lenient", "strict"]
PROFILES: tuple[Profile, ...] = ("lenient", "strict")

ENTITY_BOMB = (b'<?xml version="1.0"?><!DOCTYPE bomb [<!ENTITY a "aaaaaaaaaa">'
               b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
               b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
               b'<Response>&c;</Response></soap:Body></soap:Envelope>')


@dataclass
class Behaviour:
    """What to do to the next request: be slow (after doing the work), drop the connection, fail, or attack."""

    kind: str
    seconds: float = 0.0
    status: int = 500
    size: int = 0
    declared: bool = True


_BOMB: bytes | None = None


def gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros (made once, on first use)."""
    global _BOMB
    if _BOMB is None:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = bytes(1024 * 1024)
        _BOMB = b"".join(compressor.compress(block) for _ in range(1024)) + compressor.flush()
    return _BOMB


@dataclass
class SoapReply:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class SoapSimulatorServer:
    """Serves :meth:`respond` over HTTP on a daemon thread, at ``http://host:port/<path>``."""

    path = "/"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, name: str = "soap-simulator") -> None:
        self.host = host
        self._behaviours: deque[Behaviour] = deque()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        # A short poll: closing the simulator waits for it (half a second by default).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=name, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}{self.path}"

    def respond(self, body: bytes, headers: Message) -> SoapReply:
        """One SOAP request in, one answer out. Raise UnsafeXml or MalformedXml for a request that is not
        acceptable XML: it is answered with a SOAP fault."""
        raise NotImplementedError

    # -- controls for tests and demos ------------------------------------------------------------------------------

    def slow_next(self, seconds: float) -> None:
        """Do the next request's work, then wait ``seconds`` before answering (a caller may give up first)."""
        self._behaviours.append(Behaviour("slow", seconds=seconds))

    def drop_next(self) -> None:
        """Close the next request's connection without doing anything or answering."""
        self._behaviours.append(Behaviour("drop"))

    def fail_next(self, status: int = 500) -> None:
        self._behaviours.append(Behaviour("fail", status=status))

    def hostile_next(self) -> None:
        """Answer the next request with an entity-expansion bomb, as a compromised server might."""
        self._behaviours.append(Behaviour("hostile"))

    def huge_next(self, size: int = 300 * 1024 * 1024, *, declared: bool = True) -> None:
        """Do the next request's work, then answer with ``size`` bytes: with a Content-Length saying so, or
        streamed in chunks without one. Writing stops when the caller hangs up."""
        self._behaviours.append(Behaviour("huge", size=size, declared=declared))

    def gzip_bomb_next(self) -> None:
        """Do the next request's work, then answer with a 1 MB gzip body that inflates to 1 GiB."""
        self._behaviours.append(Behaviour("bomb"))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                behaviour = simulator._behaviours.popleft() if simulator._behaviours else None
                if behaviour is not None and behaviour.kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if behaviour is not None and behaviour.kind == "fail":
                    self._answer(SoapReply(b"Service Unavailable", behaviour.status), "text/plain")
                    return
                if behaviour is not None and behaviour.kind == "hostile":
                    self._answer(SoapReply(ENTITY_BOMB), CONTENT_TYPE)
                    return
                if not (self.headers.get("Content-Type") or "").startswith("text/xml"):
                    self._answer(SoapReply(b"SOAP 1.1 (text/xml) only", 415), "text/plain")
                    return
                try:
                    reply = simulator.respond(body, self.headers)
                except (UnsafeXml, MalformedXml) as exc:
                    reply = SoapReply(soap_fault(f"Bad request: {exc}"), 500)
                if behaviour is not None and behaviour.kind == "slow":
                    time.sleep(behaviour.seconds)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if behaviour is not None and behaviour.kind == "huge":
                        self._answer_huge(behaviour.size, behaviour.declared)
                    elif behaviour is not None and behaviour.kind == "bomb":
                        self.close_connection = True  # the caller hangs up part-way: nothing more comes on it
                        self._answer(SoapReply(gzip_bomb(), headers={"Content-Encoding": "gzip"}), CONTENT_TYPE)
                    else:
                        self._answer(reply, CONTENT_TYPE)

            def _answer_huge(self, size: int, declared: bool) -> None:
                """``size`` bytes of an XML comment: a well-formed start, and no end before the caller gives up."""
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                if declared:
                    self.send_header("Content-Length", str(size))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"<!--" + b"x" * (64 * 1024 - 4)
                sent = 0
                while sent < size:
                    piece = block[:size - sent]
                    self.wfile.write(piece if declared else b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
                    block = b"x" * len(block)
                if not declared:
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            def _answer(self, reply: SoapReply, content_type: str) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def serve_from_command_line(system: str, default_port: int,
                            start: Callable[[str, str, str, str, int, Profile], SoapSimulatorServer]) -> None:
    """``python -m adapters.<system>.simulator``: start a simulator from its options and serve until Ctrl-C.

    ``start`` builds the simulator from username, password, database id, host, port and profile.
    """
    parser = argparse.ArgumentParser(description=f"Run a {system} connector simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--username", default="casebridge")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--database-id", default="DEMO")
    parser.add_argument("--profile", choices=PROFILES, default="lenient",
                        help="strict: only what the product's documentation promises")
    args = parser.parse_args()
    simulator = start(args.username, args.password, args.database_id, args.host, args.port, args.profile)
    print(f"{system} simulator on {simulator.url} (user {args.username}, database {args.database_id}, "
          f"{args.profile} profile)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        simulator.close()
