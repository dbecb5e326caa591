"""HTTP/1.1 written byte by byte, for tests where the framing is the point, and the process's peak memory."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    #: Body bytes the client managed to hand to the socket before the answer came (or the server stopped reading).
    sent: int


def raw_request(port: int, head: str, chunks: Iterable[bytes] = (), *, timeout: float = 10.0) -> RawAnswer:
    """Send ``head`` (request line and headers, without the blank line), then ``chunks`` as they are, stopping as
    soon as the server answers; returns the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
        sent = 0
        deadline = time.monotonic() + timeout
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered (or closed): stop sending
            view = memoryview(chunk)
            try:
                while view:
                    _, writable, _ = select.select([], [sock], [], max(0.0, deadline - time.monotonic()))
                    if not writable or select.select([sock], [], [], 0)[0]:
                        break
                    written = sock.send(view[:65536])
                    sent += written
                    view = view[written:]
            except (BrokenPipeError, ConnectionResetError):
                break
            if view:
                break
        return _read_answer(sock, sent, deadline)


def _read_answer(sock: socket.socket, sent: int, deadline: float) -> RawAnswer:
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            piece = b""
        if not piece:
            raise AssertionError(f"no answer from the server (got {data[:200]!r}); {sent} body bytes sent")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return RawAnswer(int(lines[0].split()[1]), headers, body[:length], sent)


def chunked(count: int, size: int) -> Iterable[bytes]:
    """``count`` chunks of ``size`` bytes in chunked transfer coding, then the last chunk."""
    data = b"x" * size
    frame = f"{size:x}\r\n".encode() + data + b"\r\n"
    for _ in range(count):
        yield frame
    yield b"0\r\n\r\n"


def reset_peak_memory() -> int:
    """Resets this process's peak resident memory (Linux) and returns the current resident size in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def peak_memory() -> int:
    """The process's peak resident memory in bytes since the last reset."""
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")
