"""A small HTTP/1.1 client for adapters: connections kept alive per origin, and little CPU per request.

An adapter sends one request per delivery, and on the delivery path the client's own cost counts: through
``httpx.Client`` a request cost about a third of a worker's CPU per case, most of it in building httpx's request and
response objects, cookie handling and parsing response headers through the ``email`` package. This client builds
the request as one string and parses the response on bytes (``adapters.common.http1``).

What it keeps from httpx: its exception classes (``httpx.TimeoutException``, ``httpx.TransportError`` and their
subclasses), and its proxies. An origin that the environment routes through a proxy (``HTTPS_PROXY``,
``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) is sent through an ``httpx.Client`` that honours them.
"""

from __future__ import annotations

import base64
import re
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import unquote, urlencode, urlsplit

import httpx

from adapters.common.http1 import DEFAULT_MAX_BODY, Connection, Response, ResponseTooLarge, decoded
from broker.logging import redact_url

__all__ = ["HttpClient", "Response", "ResponseTooLarge"]


def _user_agent() -> str:
    try:
        return f"casebridge/{version('casebridge')}"
    except PackageNotFoundError:
        return "casebridge"


_USER_AGENT = _user_agent()


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL taken apart once: where to connect, and the start of the request to send there."""

    scheme: str
    host: str
    port: int
    request_target: str
    fixed_headers: str  # Host, Authorization from the URL's user info, and the client's default headers

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class HttpClient:
    """Sends requests with a complete body; answers with a complete :class:`Response`.

    Thread-safe: connections are taken from and returned to a pool per origin under a lock, and a connection is
    only ever used by one request at a time.
    """

    def __init__(self, *, timeout: float, headers: Mapping[str, str] | None = None,
                 verify: ssl.SSLContext | bool = True, trust_env: bool = True, max_idle_per_origin: int = 8,
                 max_response_bytes: int = DEFAULT_MAX_BODY) -> None:
        self._timeout = timeout
        #: The largest response body read, as received and once decompressed (ResponseTooLarge above it).
        self.max_response_bytes = max_response_bytes
        self._default_headers = dict(headers or {})
        for name, value in self._default_headers.items():
            _check_header(name, value)
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None
        self._trust_env = trust_env
        self._max_idle = max_idle_per_origin
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._proxied: dict[tuple[str, str], bool] = {}
        self._proxy_client: httpx.Client | None = None
        self._lock = threading.Lock()

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("POST", url, content=content, headers=headers)

    def get(self, url: str, *, params: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", url, params=params, headers=headers)

    def request(self, method: str, url: str, *, content: bytes = b"", headers: Mapping[str, str] | None = None,
                params: Mapping[str, str] | None = None) -> Response:
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        target = self._target(url)
        if self._goes_through_proxy(target):
            return self._send_through_proxy(method, url, content, headers)
        lines = [f"{method} {target.request_target} HTTP/1.1\r\n", target.fixed_headers]
        for name, value in (headers or {}).items():
            _check_header(name, value)
            lines.append(f"{name}: {value}\r\n")
        if content or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(content)}\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1") + content
        return self._exchange(target, method, data)

    def close(self) -> None:
        with self._lock:
            connections = [connection for idle in self._idle.values() for connection in idle]
            self._idle.clear()
            proxy_client, self._proxy_client = self._proxy_client, None
        for connection in connections:
            connection.close()
        if proxy_client is not None:
            proxy_client.close()

    # --- the exchange -----------------------------------------------------------------------------------------

    def _exchange(self, target: _Target, method: str, data: bytes) -> Response:
        connection, reused = self._checkout(target)
        try:
            try:
                connection.send(data, self._timeout)
            except (BrokenPipeError, ConnectionResetError):
                connection.close()
                if not reused:
                    raise httpx.WriteError("the connection was reset while the request was being sent") from None
                # The server had closed this idle connection: the request never reached it. Once more, afresh.
                connection = self._connect(target)
                try:
                    connection.send(data, self._timeout)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc
            response = connection.read_response(method, self.max_response_bytes)
        except BaseException:
            connection.close()
            raise
        if response.keep_alive:
            self._checkin(target, connection)
        else:
            connection.close()
        return response

    def _checkout(self, target: _Target) -> tuple[Connection, bool]:
        """An idle connection the server has not closed meanwhile, else a new one; and whether it was idle."""
        while True:
            with self._lock:
                idle = self._idle.get(target.origin)
                connection = idle.pop() if idle else None
            if connection is None:
                return self._connect(target), False
            if not connection.is_stale():
                return connection, True
            connection.close()

    def _connect(self, target: _Target) -> Connection:
        return Connection.open(target.scheme, target.host, target.port, timeout=self._timeout,
                               ssl_context=self._tls() if target.scheme == "https" else None)

    def _checkin(self, target: _Target, connection: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(target.origin, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            verify = self._verify
            self._ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
                verify=verify)
        return self._ssl_context

    # --- URLs and proxies -------------------------------------------------------------------------------------

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = self._parse(url)
            if len(self._targets) < 1024:  # an adapter talks to a handful of URLs; never grow without bound
                self._targets[url] = target
        return target

    def _parse(self, url: str) -> _Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"only http and https URLs can be requested, not {redact_url(url)!r}")
        if not parts.hostname:
            raise httpx.UnsupportedProtocol(f"the URL has no host: {redact_url(url)!r}")
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        host_header = parts.netloc.rpartition("@")[2]
        if parts.port == default_port:
            host_header = host_header.rpartition(":")[0]
        request_target = parts.path or "/"
        if parts.query:
            request_target = f"{request_target}?{parts.query}"
        fixed = [f"Host: {host_header}\r\n", f"User-Agent: {_USER_AGENT}\r\n"]
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            fixed.append(f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n")
        fixed += [f"{name}: {value}\r\n" for name, value in self._default_headers.items()]
        for text in (request_target, host_header):
            if any(character in text for character in " \r\n"):
                raise httpx.InvalidURL(f"the URL has spaces or line breaks where none may be: {redact_url(url)!r}")
        return _Target(scheme, parts.hostname, port, request_target, "".join(fixed))

    def _goes_through_proxy(self, target: _Target) -> bool:
        if not self._trust_env:
            return False
        key = (target.scheme, target.host)
        decided = self._proxied.get(key)
        if decided is None:
            proxies = urllib.request.getproxies_environment()
            proxy = proxies.get(target.scheme) or proxies.get("all")
            decided = bool(proxy) and not urllib.request.proxy_bypass(target.host)
            self._proxied[key] = decided
        return decided

    def _send_through_proxy(self, method: str, url: str, content: bytes,
                            headers: Mapping[str, str] | None) -> Response:
        with self._lock:
            if self._proxy_client is None:
                self._proxy_client = httpx.Client(timeout=self._timeout, headers=self._default_headers,
                                                  verify=self._verify, trust_env=True)
            client = self._proxy_client
        limit = self.max_response_bytes
        with client.stream(method, url, content=content or None, headers=headers) as answer:
            raw = bytearray()
            for chunk in answer.iter_raw():
                raw += chunk
                if len(raw) > limit:
                    raise ResponseTooLarge(limit)
            received = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in answer.headers.raw]
            return Response(answer.status_code, answer.reason_phrase, received, decoded(bytes(raw), received, limit),
                            keep_alive=True)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_header(name: str, value: str) -> None:
    """Refuse what would let a header end early and smuggle another one (or a second request) in."""
    if "\r" in value or "\n" in value or not _HEADER_NAME.fullmatch(name):
        raise httpx.LocalProtocolError(f"illegal header {name!r}: names take no ':' or spaces, values no line breaks")
