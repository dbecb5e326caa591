"""HTTP/1.1 on one socket: write a request, read its response. The wire half of :mod:`broker.sdk.http_client`.

Responses are framed by llhttp (through ``httptools``, the parser uvicorn uses), never by hand: a Content-Length,
chunk size or header line that llhttp refuses is a broken answer. On top of llhttp this refuses what an adapter
should never accept from a LOB system: a ``Transfer-Encoding`` other than ``chunked`` alone, a body larger than
the caller's limit (as sent, or once decompressed), and a response still arriving after the request's deadline.

Every failure is raised as a :class:`~broker.errors.DeliveryError` that says whether trying again can help and
whether the request may have reached the server (``may_have_landed``), so an adapter needs no error mapping of its
own for the transport.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Any

import httptools

from broker.errors import PermanentDeliveryError, TransientDeliveryError

_READ_SIZE = 64 * 1024
_MAX_HEAD = 64 * 1024  # status line and headers; a longer head is not an HTTP server talking to us
_NO_BODY_STATUSES = frozenset({204, 304})
#: The largest body read when the caller names no limit: no answer is read into memory without bound.
DEFAULT_MAX_BODY = 10 * 1024 * 1024


# --- errors ---------------------------------------------------------------------------------------------------


class ConnectFailed(TransientDeliveryError):
    """No connection could be made (refused, name not found, TLS handshake refused, no connection in time):
    nothing was sent, so nothing can have landed."""

    def __init__(self, message: str) -> None:
        super().__init__("connection", message, may_have_landed=False)


class RequestNotSent(TransientDeliveryError):
    """The request could not be written whole: the server cannot have acted on it."""

    def __init__(self, message: str) -> None:
        super().__init__("connection", message, may_have_landed=False)


class RequestTimedOut(TransientDeliveryError):
    """The request was sent and no complete answer came before the deadline: it may have been acted on."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message, may_have_landed=True)


class ResponseBroken(TransientDeliveryError):
    """The request was sent and the answer was cut off or is not HTTP the parser accepts: it may have been acted
    on."""

    def __init__(self, message: str, *, reason: str = "connection") -> None:
        super().__init__(reason, message, may_have_landed=True)


class ResponseTooLarge(TransientDeliveryError):
    """The response's body, as sent or once decompressed, is larger than the caller's limit; reading stopped there
    (and the connection is not used again). The request itself may have been acted on."""

    def __init__(self, limit: int, *, decompressed: bool = False) -> None:
        super().__init__("response_too_large", f"the response body is over the limit of {limit} bytes"
                         + (" once decompressed" if decompressed else ""), may_have_landed=True)
        self.limit = limit


class InvalidRequest(PermanentDeliveryError):
    """The request cannot be sent as asked (a URL without a host, a header that could smuggle another, a value
    outside Latin-1): nothing was sent, and sending again cannot help until the settings or data change."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_request", message)


# --- the response ---------------------------------------------------------------------------------------------


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

    def header_list(self, name: str) -> list[str]:
        """Every value of a header (``Set-Cookie`` comes once per cookie), by case-insensitive name."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

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


class Deadline:
    """The end of one request: each socket operation waits at most ``per_operation`` seconds, and never past
    ``total`` seconds from the start."""

    __slots__ = ("ends", "per_operation", "total")

    def __init__(self, per_operation: float, total: float) -> None:
        self.per_operation = per_operation
        self.total = total
        self.ends = time.monotonic() + total

    def remaining(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return min(self.per_operation, left)


# --- the parser's callbacks -----------------------------------------------------------------------------------


class _Reader:
    """What llhttp reports about one response, and the limits checked as it reports it."""

    __slots__ = ("body_size", "complete", "error", "extra", "head_only", "headers", "headers_done", "limit",
                 "method", "parser", "parts", "reason", "status", "until_close")

    def __init__(self, method: str, limit: int, *, head_only: bool = False) -> None:
        self.method = method
        self.limit = limit
        self.head_only = head_only
        self.parser: Any = None
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []
        self.body_size = 0
        self.headers_done = False
        self.until_close = False
        self.complete = False
        self.extra = False
        self.error: BaseException | None = None

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True  # bytes after the answer: nothing should come unasked, so the connection is not reused
            return
        self.headers, self.parts, self.body_size, self.headers_done = [], [], 0, False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # after the head, these are a chunked body's trailer fields
            self.headers.append((name.decode("latin-1"), value.decode("latin-1").strip(" \t")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        if self.status < 200 or self.head_only:
            if self.head_only:
                self.complete = True
            return
        codings = _tokens(self.headers, "transfer-encoding")
        if codings and codings != ["chunked"]:
            self._fail(ResponseBroken(f"unsupported transfer coding: {', '.join(codings)} (only chunked is read)",
                                      reason="malformed_answer"))
        lengths = [value for name, value in self.headers if name.lower() == "content-length"]
        if lengths and int(lengths[0]) > self.limit:
            self._fail(ResponseTooLarge(self.limit))
        no_body = self.method == "HEAD" or self.status in _NO_BODY_STATUSES
        self.until_close = not no_body and not codings and not lengths

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.body_size += len(body)
        if self.body_size > self.limit:
            self._fail(ResponseTooLarge(self.limit))
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self.status >= 200:
            self.complete = True
        else:  # informational (100 Continue): the real answer follows
            self.reason = b""

    def _fail(self, error: BaseException) -> None:
        self.error = error
        raise error


# --- one connection -------------------------------------------------------------------------------------------


class Connection:
    """One socket to one origin (or to a proxy, or through a proxy's tunnel)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reusable = True

    @classmethod
    def open(cls, host: str, port: int, *, deadline: Deadline, tls: ssl.SSLContext | None = None,
             server_hostname: str | None = None, tunnel_to: tuple[str, int, str] | None = None) -> Connection:
        """Connect to ``host:port``; with ``tunnel_to`` (host, port, extra header lines) first ask that proxy for a
        tunnel; with ``tls``, then speak TLS (to ``server_hostname``)."""
        try:
            sock = socket.create_connection((host, port), timeout=deadline.remaining())
        except TimeoutError as exc:
            raise ConnectFailed(f"no connection to {host}:{port} within {deadline.total:g}s") from exc
        except OSError as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is never held back for an ACK
        connection = cls(sock)
        try:
            if tunnel_to is not None:
                connection._tunnel(*tunnel_to, deadline=deadline)
            if tls is not None:
                sock.settimeout(deadline.remaining())
                connection.sock = tls.wrap_socket(sock, server_hostname=server_hostname or host)
        except TimeoutError as exc:
            connection.close()
            raise ConnectFailed(f"TLS handshake with {server_hostname or host} timed out") from exc
        except ssl.SSLError as exc:  # a certificate refused, either way, is a failure to connect
            connection.close()
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            connection.close()
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _tunnel(self, host: str, port: int, extra: str, *, deadline: Deadline) -> None:
        target = f"{host}:{port}"
        self.sock.settimeout(deadline.remaining())
        self.sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode("latin-1"))
        answer = self.read_response("CONNECT", deadline, limit=_MAX_HEAD, head_only=True)
        if not 200 <= answer.status_code < 300:
            raise ConnectFailed(f"the proxy refused a tunnel to {target}: HTTP {answer.status_code}")

    def is_stale(self) -> bool:
        """Whether an idle connection has something to read: the server closed it, or broke the protocol."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def send(self, data: bytes, deadline: Deadline) -> None:
        """Write the whole request. ``BrokenPipeError``/``ConnectionResetError`` pass through: the caller knows
        whether the connection was a reused one, and so whether the request may simply go again."""
        try:
            self.sock.settimeout(deadline.remaining())
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except TimeoutError as exc:
            raise RequestNotSent(f"the request could not be sent within {deadline.total:g}s") from exc
        except OSError as exc:
            raise RequestNotSent(f"{type(exc).__name__}: {exc}") from exc

    def read_response(self, method: str, deadline: Deadline, *, limit: int = DEFAULT_MAX_BODY,
                      decompressed_limit: int | None = None, head_only: bool = False) -> Response:
        """The response to the request just sent; informational (1xx) responses are passed over. A body larger
        than ``limit`` bytes as received, or ``decompressed_limit`` once decoded, raises ResponseTooLarge."""
        reader = _Reader(method, limit, head_only=head_only)
        parser = httptools.HttpResponseParser(reader)
        reader.parser = parser
        received = 0
        while not reader.complete:
            try:
                self.sock.settimeout(deadline.remaining())
                data = self.sock.recv(_READ_SIZE)
            except TimeoutError as exc:
                self.reusable = False
                raise RequestTimedOut(f"no complete answer within {deadline.total:g}s") from exc
            except OSError as exc:
                self.reusable = False
                raise ResponseBroken(f"{type(exc).__name__}: {exc}") from exc
            if not data:
                self.reusable = False
                if reader.headers_done and reader.until_close:
                    break  # the end of the connection is the end of this body
                raise ResponseBroken("the server closed the connection without a complete response")
            received += len(data)
            if not reader.headers_done and received > _MAX_HEAD:
                self.reusable = False
                raise ResponseBroken("the response's head is over 64 kB", reason="malformed_answer")
            try:
                parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                if reader.error is not None:
                    self.reusable = False
                    raise reader.error from None
                if reader.complete:  # the answer is whole; what followed it is not HTTP
                    self.reusable = False
                    break
                self.reusable = False
                raise ResponseBroken(f"not an HTTP/1.x answer the parser accepts: {exc}",
                                     reason="malformed_answer") from None
        keep_alive = _keep_alive(parser.get_http_version(), reader.headers) and not reader.until_close
        if reader.extra or not keep_alive:
            self.reusable = False
        body = b"".join(reader.parts)
        return Response(reader.status, reader.reason.decode("latin-1"), reader.headers,
                        decoded(body, reader.headers, limit if decompressed_limit is None else decompressed_limit),
                        self.reusable)

    def close(self) -> None:
        self.reusable = False
        with contextlib.suppress(OSError):
            self.sock.close()


def _keep_alive(version: str, headers: list[tuple[str, str]]) -> bool:
    # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes it unless told otherwise.
    tokens = _tokens(headers, "connection")
    return ("keep-alive" in tokens) if version == "1.0" else ("close" not in tokens)


def _tokens(headers: list[tuple[str, str]], name: str) -> list[str]:
    """The comma-separated tokens of every header of that name, lower-cased, in order."""
    return [token.strip().lower() for key, value in headers if key.lower() == name
            for token in value.split(",") if token.strip()]


def decoded(body: bytes, headers: list[tuple[str, str]], limit: int = DEFAULT_MAX_BODY) -> bytes:
    """The body with any gzip or deflate content coding undone (we never ask for one unless told to, but a server
    may send it), never more than ``limit`` bytes of it: a small "bomb" that inflates a thousandfold raises
    ResponseTooLarge after ``limit`` bytes, not after the gigabyte."""
    codings = [token for token in _tokens(headers, "content-encoding") if token != "identity"]
    if not codings or not body:
        return body
    if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise ResponseBroken(f"unsupported content coding: {', '.join(codings)}", reason="malformed_answer")
    try:
        if codings[0] == "deflate":
            try:
                return _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:
                return _inflate(body, -zlib.MAX_WBITS, limit)  # raw deflate, as some servers send it
        return _inflate(body, 16 + zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        raise ResponseBroken(f"the body is not valid {codings[0]}: {exc}", reason="malformed_answer") from exc


def _inflate(body: bytes, window_bits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(window_bits)
    out = inflater.decompress(body, limit + 1)
    if len(out) <= limit and not inflater.unconsumed_tail:
        out += inflater.flush()
    if len(out) > limit or inflater.unconsumed_tail:
        raise ResponseTooLarge(limit, decompressed=True)
    return out
