"""A webhook receiver that does what docs/adapters/webhook.md asks of one: it keeps each event once by its
``Idempotency-Key`` and answers ``GET <path>/received?idempotency_key=`` with the reference it gave. The contract
kit's sandbox for the webhook adapter, and a model for a team writing a receiver."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from broker.sdk import Sandbox


@dataclass
class Received:
    reference: str
    path: str
    our_reference: str | None
    event_type: str
    body: dict[str, Any] = field(default_factory=dict)


class WebhookReceiver(Sandbox):
    title: ClassVar[str] = "webhook receiver"
    default_port: ClassVar[int] = 0

    def __init__(self) -> None:
        self.received: dict[str, Received] = {}  # by Idempotency-Key
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        assert self._server is not None, "start it first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/events"

    def environment(self) -> dict[str, str]:
        return {}

    def records_for(self, our_reference: str) -> list[str]:
        with self._lock:
            return sorted({item.reference for item in self.received.values()
                           if item.our_reference == our_reference and item.event_type == "case.created"})

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key") or ""
                try:
                    document = json.loads(body)
                except ValueError:
                    self._answer(400, {"error": "not JSON"})
                    return
                with receiver._lock:
                    known = receiver.received.get(key)
                    if known is None:  # a follow-up is about the record its case already has
                        reference = document.get("external_ref") or f"WH-{len(receiver.received) + 1}"
                        known = Received(reference, self.path,
                                         document.get("our_reference"), self.headers.get("X-Casebridge-Event", ""),
                                         document)
                        receiver.received[key] = known
                self._answer(201, {"reference": known.reference})

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                key = (query.get("idempotency_key") or [""])[0]
                with receiver._lock:
                    known = receiver.received.get(key)
                if known is None:
                    self._answer(404, {"error": "no such event"})
                else:
                    self._answer(200, {"reference": known.reference})

            def _answer(self, status: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
