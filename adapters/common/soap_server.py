"""The HTTP side of a SOAP simulator: serving on a thread, refusing SOAP 1.2, and misbehaving on request.

A simulator subclasses :class:`SoapSimulatorServer` and implements :meth:`respond`; tests then tell it to be slow,
to drop a connection, to fail with an HTTP status, or to answer with an entity-expansion bomb.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from adapters.common.soap import CONTENT_TYPE, MalformedXml, UnsafeXml, soap_fault

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
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
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
                    self._answer(reply, CONTENT_TYPE)

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
                            start: Callable[[str, str, str, str, int], SoapSimulatorServer]) -> None:
    """``python -m adapters.<system>.simulator``: start a simulator from its options and serve until Ctrl-C.

    ``start`` builds the simulator from username, password, database id, host and port.
    """
    parser = argparse.ArgumentParser(description=f"Run a {system} connector simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--username", default="casebridge")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--database-id", default="DEMO")
    args = parser.parse_args()
    simulator = start(args.username, args.password, args.database_id, args.host, args.port)
    print(f"{system} simulator on {simulator.url} (user {args.username}, database {args.database_id})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        simulator.close()
