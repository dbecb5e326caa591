"""The stand-in LOB system the benchmarks deliver to: answers every POST with 201 and a reference.

A bare asyncio protocol rather than ``http.server``: on a small machine the stand-in shares the cores with the broker,
RabbitMQ and PostgreSQL, so it should take as little of them as a remote LOB system would.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"


class _ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: what the webhook adapter sends, and nothing more."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            if not head.startswith(b"post "):
                raise RuntimeError(f"the receiver takes POSTs only, got {head[:40]!r}")
            found = head.find(b"\r\ncontent-length:")
            if found < 0:
                raise RuntimeError("the receiver needs a Content-Length body")
            line_end = head.find(b"\r\n", found + 2)
            length = int(head[found + len(b"\r\ncontent-length:"):line_end if line_end >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            assert self.transport is not None
            self.transport.write(self.receiver.answer(body))


class Receiver:
    """Counts what arrived and when the last of it did; with ``track`` (a pattern with one group), also when each
    case whose body matches arrived, by the group's text (``time.monotonic``, comparable across processes)."""

    def __init__(self, track: bytes | None = None) -> None:
        self.count = 0
        self.last_at = 0.0
        self.track = re.compile(track) if track else None
        self.arrivals: dict[str, float] = {}
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(self.loop.create_server(
            lambda: _ReceiverProtocol(self), "127.0.0.1", 0, backlog=256))
        ready.set()
        self.loop.run_forever()

    def answer(self, body: bytes) -> bytes:
        """The response to one request (called on the receiver's own thread only)."""
        self.count += 1
        self.last_at = time.monotonic()
        if self.track is not None and (found := self.track.search(body)):
            self.arrivals.setdefault(found.group(1).decode(), self.last_at)
        reply = b'{"reference": "LOB-%d"}' % self.count
        return b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(reply), reply)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def write_webhook_mappings(directory: Path, receiver_url: str) -> None:
    """A mappings/ folder routing every highways case to the receiver through the webhook adapter."""
    directory.mkdir()
    (directory / "services.yaml").write_text((MAPPINGS / "services.yaml").read_text())
    (directory / "routes.yaml").write_text(
        "targets:\n  highways:\n    adapter: webhook\n    settings:\n"
        f"      url: {receiver_url}/highways\n"
        "routes:\n  - name: highways\n    services: [\"highways.*\"]\n    deliver:\n      - target: highways\n"
    )
    (directory / "highways.yaml").write_text("service_codes:\n  highways.pothole: POT\n")
