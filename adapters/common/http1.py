"""HTTP/1.1 on one socket: write a request, read its response. The wire half of ``adapters.common.http_client``.

Only what an adapter talking to a LOB system needs: a request with a complete body and Content-Length, and a
response framed by Content-Length, chunked transfer coding or the end of the connection. Parsing is done on bytes
with ``bytes.find`` and ``split``, which is what makes it cheap: ``http.client`` parses every response's headers
through the ``email`` package, and httpx's default transport through the pure-Python h11.

Errors are raised as httpx's exception classes (without a request), so that adapters catch one hierarchy whichever
client sent the request.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import zlib
from dataclasses import dataclass

import httpx

_MAX_HEAD = 64 * 1024  # status line and headers; a longer head is not an HTTP server talking to us
_READ_SIZE = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
#: The largest body read when the caller names no limit: no answer is read into memory without bound.
DEFAULT_MAX_BODY = 10 * 1024 * 1024


class ResponseTooLarge(httpx.RemoteProtocolError):
    """The response's body, as sent or once decompressed, is larger than the caller's limit; reading stopped there
    (and the connection is not used again)."""

    def __init__(self, limit: int, *, decompressed: bool = False) -> None:
        super().__init__(f"the response body is over the limit of {limit} bytes"
                         + (" once decompressed" if decompressed else ""))
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response: status, headers as received (names as sent, in order) and the decoded body."""

    status_code: int
    reason: str
    headers: list[tuple[str, str]]
    content: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def text(self) -> str:
        """The body as text: the charset the response names, UTF-8 if none; undecodable bytes replaced."""
        content_type = self.header("content-type") or ""
        charset = "utf-8"
        for parameter in content_type.split(";")[1:]:
            key, _, value = parameter.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")


class Connection:
    """One socket to one origin, with the bytes read past the end of the last response."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    @classmethod
    def open(cls, scheme: str, host: str, port: int, *, timeout: float | None,
             ssl_context: ssl.SSLContext | None) -> Connection:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout}s") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is never held back for an ACK
        if scheme == "https":
            assert ssl_context is not None
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            except TimeoutError as exc:
                sock.close()
                raise httpx.ConnectTimeout(f"TLS handshake with {host}:{port} timed out") from exc
            except OSError as exc:  # ssl.SSLError included: a bad certificate is a failure to connect
                sock.close()
                raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return cls(sock)

    def is_stale(self) -> bool:
        """Whether an idle connection has something to read: the server closed it, or broke the protocol."""
        if self._buffer:
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def send(self, data: bytes, timeout: float | None) -> None:
        """Write the whole request. ``BrokenPipeError``/``ConnectionResetError`` pass through: the caller knows
        whether the connection was a reused one, and so whether the request may simply go again."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except TimeoutError as exc:
            raise httpx.WriteTimeout(f"request not sent within {timeout}s") from exc
        except OSError as exc:
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc

    def read_response(self, method: str, max_body: int = DEFAULT_MAX_BODY) -> Response:
        """The response to the request just sent; informational (1xx) responses are passed over. A body larger
        than ``max_body`` bytes, as received or decompressed, raises :class:`ResponseTooLarge`."""
        while True:
            status, reason, headers, keep_alive = self._read_head()
            if status >= 200:
                break
        if method == "HEAD" or status in _NO_BODY_STATUSES:
            body = b""
        else:
            body, keep_alive = self._read_body(headers, keep_alive, max_body)
        return Response(status, reason, headers, decoded(body, headers, max_body), keep_alive)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # --- reading ----------------------------------------------------------------------------------------------

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(_READ_SIZE)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("no answer in time") from exc
        except OSError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        if not chunk:
            raise httpx.RemoteProtocolError("the server closed the connection without a complete response")
        self._buffer += chunk

    def _read_head(self) -> tuple[int, str, list[tuple[str, str]], bool]:
        searched = 0
        while (end := self._buffer.find(b"\r\n\r\n", searched)) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise httpx.RemoteProtocolError("the response's head is over 64 kB")
            searched = max(0, len(self._buffer) - 3)
            self._fill()
        head = bytes(self._buffer[:end])
        del self._buffer[:end + 4]
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding: part of the previous value
                folded_name, folded_value = headers[-1]
                headers[-1] = (folded_name, f"{folded_value} {line.strip().decode('latin-1')}")
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise httpx.RemoteProtocolError(f"malformed header line: {line[:80]!r}")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        tokens = _tokens(headers, "connection")
        # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes it unless told otherwise.
        keep_alive = ("keep-alive" in tokens) if version == b"HTTP/1.0" else ("close" not in tokens)
        return int(code), reason.decode("latin-1"), headers, keep_alive

    def _read_body(self, headers: list[tuple[str, str]], keep_alive: bool, limit: int) -> tuple[bytes, bool]:
        if "chunked" in _tokens(headers, "transfer-encoding"):
            return self._read_chunked(limit), keep_alive
        lengths = sorted({value for name, value in headers if name.lower() == "content-length"})
        if lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                raise httpx.RemoteProtocolError(f"bad Content-Length: {', '.join(lengths)}")
            if int(lengths[0]) > limit:
                raise ResponseTooLarge(limit)
            return self._read_exactly(int(lengths[0])), keep_alive
        return self._read_to_close(limit), False

    def _read_exactly(self, length: int) -> bytes:
        while len(self._buffer) < length:
            self._fill()
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise httpx.RemoteProtocolError("a chunk's size line is over 64 kB")
            self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 2]
        return line

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line().partition(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size: {size_text[:20]!r}") from None
            if size == 0:
                while self._read_line():  # trailer fields, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise ResponseTooLarge(limit)
            parts.append(self._read_exactly(size))
            if self._read_exactly(2) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk does not end with CRLF")

    def _read_to_close(self, limit: int) -> bytes:
        while True:
            try:
                self._fill()
            except httpx.RemoteProtocolError:  # the end of the connection is the end of this body
                body = bytes(self._buffer)
                self._buffer.clear()
                return body
            if len(self._buffer) > limit:
                raise ResponseTooLarge(limit)


def _tokens(headers: list[tuple[str, str]], name: str) -> set[str]:
    """The comma-separated tokens of every header of that name, lower-cased."""
    return {token.strip().lower() for key, value in headers if key.lower() == name for token in value.split(",")}


def decoded(body: bytes, headers: list[tuple[str, str]], limit: int = DEFAULT_MAX_BODY) -> bytes:
    """The body with any gzip or deflate content coding undone (we never ask for one, but a server may send it),
    never more than ``limit`` bytes of it: a small "bomb" that inflates a thousandfold raises ResponseTooLarge
    after ``limit`` bytes, not after the gigabyte."""
    codings = [token for token in _tokens(headers, "content-encoding") if token not in ("", "identity")]
    if not codings or not body:
        return body
    if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise httpx.DecodingError(f"unsupported content coding: {', '.join(sorted(codings))}")
    try:
        if codings[0] == "deflate":
            try:
                return _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:
                return _inflate(body, -zlib.MAX_WBITS, limit)  # raw deflate, as some servers send it
        return _inflate(body, 16 + zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        raise httpx.DecodingError(f"the body is not valid {codings[0]}: {exc}") from exc


def _inflate(body: bytes, window_bits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(window_bits)
    out = inflater.decompress(body, limit + 1)
    if len(out) <= limit and not inflater.unconsumed_tail:
        out += inflater.flush()
    if len(out) > limit or inflater.unconsumed_tail:
        raise ResponseTooLarge(limit, decompressed=True)
    return out
