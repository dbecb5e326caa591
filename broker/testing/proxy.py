"""A fault-injecting HTTP proxy between an adapter and its LOB system (a simulator or a real test system).

The contract kit points the adapter at the proxy, and the proxy forwards each request to the LOB system unless told
to misbehave for the next one: answer with a status of its own (a 503, a 429 with ``Retry-After``, a 400), hang up
without a word, or forward the request, let the LOB system act on it, and then withhold the answer until the
adapter has given up (the timeout after the LOB committed, the case query-before-create exists for). It also
records every exchange, and can answer from a script (golden files) instead of forwarding.

It works for any adapter that speaks HTTP to its LOB system, whatever the format on top (JSON, SOAP, ...).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from broker.sdk.http_client import HttpClient

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                         "proxy-connection", "upgrade", "te", "trailer"})


@dataclass(frozen=True)
class Exchange:
    """One request as the adapter sent it, and the answer it was given (None: it was given none)."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    answer: RawAnswer | None = None

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer to give the adapter: status, headers and body (Content-Length is added)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def to_text(self) -> bytes:
        """As kept in a golden file: the status line, the headers, a blank line, the body."""
        head = [f"HTTP/1.1 {self.status}"] + [f"{name}: {value}" for name, value in self.headers
                                               if name.lower() not in ("date", "server")]
        return ("\n".join(head) + "\n\n").encode("latin-1") + self.body

    @classmethod
    def from_text(cls, data: bytes) -> RawAnswer:
        normalised = data.replace(b"\r\n", b"\n") if b"\n\n" not in data else data
        head, _, body = normalised.partition(b"\n\n")
        lines = head.decode("latin-1").replace("\r", "").split("\n")
        status = int(lines[0].split()[1])
        headers = tuple((name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:]
                                                                               if line.strip()))
        return cls(status, headers, body)


@dataclass
class Fault:
    """What to do to the next request: ``answer`` (give ``answer`` without forwarding), ``drop`` (hang up without
    answering or forwarding), ``withhold`` (forward it, then keep the LOB's answer for ``seconds`` and hang up)."""

    kind: str
    answer: RawAnswer | None = None
    seconds: float = 0.0


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1 and forwards to ``upstream`` (a URL: its scheme, host and port are used; the path is the
    adapter's own)."""

    upstream: str
    faults: deque[Fault] = field(default_factory=deque)
    exchanges: list[Exchange] = field(default_factory=list)
    #: Answers to give, in order, instead of forwarding (golden files); None: forward.
    script: deque[RawAnswer] | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path or "/"
        self._client = HttpClient(timeout=120, trust_env=False, max_response_bytes=64 * 1024 * 1024)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The upstream URL with the proxy's origin: what the adapter is configured with."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._path}"

    # -- what to do next -------------------------------------------------------------------------------------------

    def answer_next(self, status: int, body: bytes = b"", *headers: tuple[str, str]) -> None:
        self.faults.append(Fault("answer", RawAnswer(status, tuple(headers), body)))

    def give_next(self, answer: RawAnswer) -> None:
        self.faults.append(Fault("answer", answer))

    def drop_next(self) -> None:
        self.faults.append(Fault("drop"))

    def withhold_next(self, seconds: float) -> None:
        """Forward the next request (the LOB system acts on it), then answer nothing for ``seconds``."""
        self.faults.append(Fault("withhold", seconds=seconds))

    def clear(self) -> None:
        self.faults.clear()
        self.exchanges.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    # -- serving ---------------------------------------------------------------------------------------------------

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> RawAnswer:
        sent = {name: value for name, value in headers
                if name.lower() not in _HOP_BY_HOP and name.lower() not in ("host", "accept-encoding", "user-agent")}
        answer = self._client.request(method, self._origin + path, content=body, headers=sent)
        return RawAnswer(answer.status_code, tuple((name, value) for name, value in answer.headers
                                                   if name.lower() not in _HOP_BY_HOP), answer.content)

    def _handle(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> RawAnswer | None:
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
            scripted = self.script.popleft() if self.script else None
            if self.script is not None and scripted is None:
                scripted = RawAnswer(599, (("Content-Type", "text/plain"),),
                                     b"the golden file has no answer for this request")
        if fault is not None and fault.kind == "drop":
            answer = None
        elif fault is not None and fault.kind == "answer":
            answer = fault.answer
        elif scripted is not None:
            answer = scripted
        else:
            answer = self._forward(method, path, headers, body)
            if fault is not None and fault.kind == "withhold":
                self.exchanges.append(Exchange(method, path, headers, body, None))
                time.sleep(fault.seconds)
                return None
        self.exchanges.append(Exchange(method, path, headers, body, answer))
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = proxy._handle(self.command, self.path, list(self.headers.items()), body)
                if answer is None:
                    self.close_connection = True
                    return
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers:
                        if name.lower() not in _HOP_BY_HOP and name.lower() not in ("date", "server"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
