"""An httpx transport on the standard library's ``http.client``: HTTP/1.1 with connections kept alive and reused.

Adapters keep httpx's client API (timeouts, headers, errors by class, ``MockTransport`` in tests) but send through
this transport, because httpx's default one (httpcore driving the pure-Python h11 parser) costs about three times
the CPU per request of ``http.client``'s C-accelerated parsing. On the delivery path that difference was a fifth of
a worker's CPU per case. Proxies configured in the environment still go through httpx's own proxy transports,
which the client mounts ahead of this one.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Iterator

import httpx

_Origin = tuple[str, str, int]


class KeepAliveTransport(httpx.BaseTransport):
    """Sends each request on an idle connection to its origin when there is one, else on a new connection."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_idle_per_origin: int = 8) -> None:
        self._ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        self._max_idle = max_idle_per_origin
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request.url.scheme))
        timeouts = request.extensions.get("timeout", {})
        body = request.read()
        connection, reused = self._checkout(origin, timeouts.get("connect"))
        try:
            try:
                _send(connection, request, body, timeouts.get("read"))
            except (BrokenPipeError, ConnectionResetError):
                if not reused:
                    raise
                # The server had closed this idle connection: the request never reached it. Once more, afresh.
                connection.close()
                connection = self._new_connection(origin, timeouts.get("connect"))
                _send(connection, request, body, timeouts.get("read"))
            response = connection.getresponse()
            content = response.read()
        except BaseException as exc:
            connected = connection.sock is not None
            connection.close()
            raise _as_httpx_error(exc, request, connected=connected) from exc
        if response.will_close:
            connection.close()
        else:
            self._checkin(origin, connection)
        return httpx.Response(
            response.status,
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.getheaders()],
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason.encode("latin-1")},
        )

    def _checkout(self, origin: _Origin, connect_timeout: float | None) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection the server has not closed meanwhile, else a new one; and whether it was idle."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                connection = idle.pop() if idle else None
            if connection is None:
                return self._new_connection(origin, connect_timeout), False
            if connection.sock is not None and not _readable(connection.sock):
                return connection, True
            connection.close()  # closed by the server (or it sent something unasked): not reusable

    def _new_connection(self, origin: _Origin, connect_timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=connect_timeout, context=self._ssl_context)
        return http.client.HTTPConnection(host, port, timeout=connect_timeout)

    def _checkin(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            connections = [connection for idle in self._idle.values() for connection in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()


def _send(connection: http.client.HTTPConnection, request: httpx.Request, body: bytes,
          read_timeout: float | None) -> None:
    """Send the request line, headers and body, connecting first if need be."""
    if connection.sock is None:
        connection.connect()  # with TCP_NODELAY: a request is never held back waiting for an ACK
    connection.sock.settimeout(read_timeout)
    connection.putrequest(request.method, _target(request.url), skip_host=True, skip_accept_encoding=True)
    for name, value in _headers(request):
        connection.putheader(name, value)
    connection.endheaders(body or None)


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it, or broke the protocol."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _headers(request: httpx.Request) -> Iterator[tuple[str, str]]:
    for name, value in request.headers.raw:
        yield name.decode("latin-1"), value.decode("latin-1")


def _target(url: httpx.URL) -> str:
    return url.raw_path.decode("ascii")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _as_httpx_error(exc: BaseException, request: httpx.Request, *, connected: bool) -> BaseException:
    """The httpx exception a caller of httpx expects for what the socket or ``http.client`` raised."""
    if isinstance(exc, httpx.HTTPError | KeyboardInterrupt | SystemExit):
        return exc
    if isinstance(exc, TimeoutError | socket.timeout):
        timeout_class = httpx.ReadTimeout if connected else httpx.ConnectTimeout
        return timeout_class(str(exc) or "timed out", request=request)
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request)
    if isinstance(exc, OSError):
        error_class = httpx.ReadError if connected else httpx.ConnectError
        return error_class(f"{type(exc).__name__}: {exc}", request=request)
    return exc
