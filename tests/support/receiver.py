"""A fake webhook target: a real HTTP server that records what it is sent and answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    reference: str = ""
    #: Whether a lookup can find it yet: a target that commits only as it answers hides a call still in progress.
    landed: bool = True


@dataclass
class Answer:
    status: int = 201
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: The call is visible to lookups only once answered (after ``delay``), not as soon as it arrives.
    lands_when_answered: bool = False


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # several workers open connections at once; the default backlog of 5 refuses some


class WebhookReceiver:
    """Answers 201 with ``{"reference": "REF-<n>"}`` unless answers were queued for a path."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lookups = 0
        self.lookups_to_fail = 0
        self.down_until = 0.0
        self.slow_until = 0.0
        self.slow_delay = 0.0
        self.lock = threading.Lock()
        self._answers: dict[str, deque[Answer]] = {}
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll: shutting the server down waits for it (the default half second, every test).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def outage(self, seconds: float) -> None:
        """Answer every request with 503 for ``seconds`` from now, as a target that is down."""
        self.down_until = time.monotonic() + seconds

    def slow(self, seconds: float, delay: float) -> None:
        """For ``seconds`` from now, record every POST at once but answer it only after ``delay`` seconds."""
        self.slow_delay = delay
        self.slow_until = time.monotonic() + seconds

    def fail_lookups(self, count: int) -> None:
        """Answer the next ``count`` lookups with 503, as a target whose search is briefly unavailable."""
        with self.lock:
            self.lookups_to_fail = count

    def answer(self, path: str, *answers: Answer) -> None:
        with self.lock:
            self._answers.setdefault(path, deque()).extend(answers)

    def forget_answers(self, path: str) -> None:
        """Drop the answers still queued for ``path``: it answers 201 again."""
        with self.lock:
            self._answers.pop(path, None)

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [item for item in self.received if item.path == path]

    def event_counts(self, path: str | None = None) -> Counter[str]:
        """How many times each event_id was received with a 2xx answer (duplicates show as counts > 1)."""
        with self.lock:
            return Counter(
                item.body["event"]["event_id"] for item in self.received
                if (path is None or item.path == path) and item.headers.get("x-test-answered", "2").startswith("2")
            )

    def wait_for(self, count: int, path: str | None = None, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                items = [item for item in self.received if path is None or item.path == path]
            if len(items) >= count:
                return items
            time.sleep(0.02)
        raise AssertionError(f"expected {count} requests on {path or 'any path'}, got {len(items)}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                sent = self.rfile.read(length)
                if len(sent) < length:  # the sender went away mid-request (a killed worker): nothing arrived
                    self.close_connection = True
                    return
                body = json.loads(sent or b"{}")
                with receiver.lock:
                    queue = receiver._answers.get(self.path)
                    if time.monotonic() < receiver.down_until:
                        answer = Answer(503)
                    else:
                        answer = queue.popleft() if queue else Answer()
                    headers = {key.lower(): value for key, value in self.headers.items()}
                    headers["x-test-answered"] = str(answer.status)
                    received = Received(self.path, headers, body, time.time(), landed=not answer.lands_when_answered)
                    receiver.received.append(received)
                    number = len(receiver.received)
                delay = max(answer.delay, receiver.slow_delay if time.monotonic() < receiver.slow_until else 0.0)
                if delay:
                    time.sleep(delay)
                payload = answer.body if answer.body is not None else (
                    {"reference": f"REF-{number}"} if 200 <= answer.status < 300 else {"error": "refused"}
                )
                received.reference = str(payload.get("reference", ""))
                received.landed = True
                data = json.dumps(payload).encode()
                try:
                    self.send_response(answer.status)
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                """``<path>/lookup?idempotency_key=<event id>``: the reference given for that event, or 404."""
                path, _, query = self.path.partition("?")
                key = parse_qs(query).get("idempotency_key", [""])[0]
                with receiver.lock:
                    failing = receiver.lookups_to_fail > 0
                    receiver.lookups_to_fail -= failing
                if failing or time.monotonic() < receiver.down_until:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.lookups += 1
                    found = [item for item in receiver.received
                             if item.path == path.removesuffix("/lookup") and item.headers.get("idempotency-key") == key
                             and item.headers.get("x-test-answered", "").startswith("2") and item.landed]
                data = json.dumps({"reference": found[0].reference} if found else {"error": "not found"}).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
