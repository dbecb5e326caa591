"""The one HTTP client every adapter uses: connections kept alive per origin, little CPU per request, limits on
everything a server sends, and every failure already classified as a delivery error.

An adapter sends a request or two per delivery, and on the delivery path the client's own cost counts: through
``httpx.Client`` a webhook POST cost about 500 us of CPU, through this client 30-90 us. It builds the request as one
string and lets llhttp (``httptools``) frame the answer (:mod:`broker.sdk._wire`).

What it promises:

- **Limits**: a body over ``max_response_bytes`` as received, or over ``max_decompressed_bytes`` once its gzip or
  deflate coding is undone, stops the read (:class:`ResponseTooLarge`); every socket operation waits at most
  ``timeout`` seconds and the whole request at most ``deadline`` seconds (default: ``timeout``), however slowly a
  server trickles its answer.
- **Errors as delivery errors**: a failure to connect is :class:`ConnectFailed` (transient, nothing sent); a request
  that could not be written whole, :class:`RequestNotSent` (transient, nothing acted on); no answer in time,
  :class:`RequestTimedOut`; a cut-off or malformed answer, :class:`ResponseBroken` (both transient, and the request
  may have landed); a request that cannot be sent as asked, :class:`InvalidRequest` (permanent). Answers are
  returned whatever their status: :func:`raise_for_status` classifies them the usual way.
- **TLS**: certificates verified against the system's trust store or ``ca_file``; a client certificate
  (``client_cert``, ``client_key``) for LOB systems that want mutual TLS.
- **Proxies** from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``): plain HTTP in
  the proxy's absolute form, HTTPS through a ``CONNECT`` tunnel.

Thread-safe: connections are taken from and returned to a pool per origin under a lock, and a connection is only
ever used by one request at a time.
"""

from __future__ import annotations

import base64
import re
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import unquote, urlencode, urlsplit

from broker.errors import PermanentDeliveryError, TransientDeliveryError
from broker.logging import redact_url
from broker.sdk._wire import (
    DEFAULT_MAX_BODY,
    ConnectFailed,
    Connection,
    Deadline,
    InvalidRequest,
    RequestNotSent,
    RequestTimedOut,
    Response,
    ResponseBroken,
    ResponseTooLarge,
)

__all__ = ["DEFAULT_MAX_BODY", "ConnectFailed", "HttpClient", "InvalidRequest", "RequestNotSent",
           "RequestTimedOut", "Response", "ResponseBroken", "ResponseTooLarge", "raise_for_status",
           "retry_after_seconds"]

#: Answers that say the request was not acted on: not received in time, too many requests, unavailable.
NOT_ACTED_ON = frozenset({408, 429, 503})
_EXCERPT = 2_000


def _user_agent() -> str:
    try:
        return f"casebridge/{version('casebridge')}"
    except PackageNotFoundError:
        return "casebridge"


_USER_AGENT = _user_agent()
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL taken apart once: where to connect, and the start of the request to send there."""

    scheme: str
    host: str
    port: int
    path: str  # the origin-form request target: path and query
    fixed_headers: str  # Host, Authorization from the URL's user info, and the client's default headers
    #: Where the socket goes (the origin, or the proxy), how the request target is written, and the tunnel asked for.
    connect_host: str
    connect_port: int
    request_target: str
    tunnel: tuple[str, int, str] | None

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class HttpClient:
    """Sends requests with a complete body; answers with a complete :class:`Response` (whatever its status)."""

    def __init__(self, *, timeout: float, deadline: float | None = None, headers: Mapping[str, str] | None = None,
                 verify: ssl.SSLContext | bool = True, ca_file: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None, trust_env: bool = True,
                 max_idle_per_origin: int = 8, max_response_bytes: int = DEFAULT_MAX_BODY,
                 max_decompressed_bytes: int | None = None) -> None:
        self._timeout = timeout
        self._deadline = deadline if deadline is not None else timeout
        #: The largest response body read as received, and once decompressed (ResponseTooLarge above either).
        self.max_response_bytes = max_response_bytes
        self.max_decompressed_bytes = max_decompressed_bytes or max_response_bytes
        self._default_headers = dict(headers or {})
        for name, value in self._default_headers.items():
            _check_header(name, value)
        self._verify = verify
        self._ca_file = ca_file
        self._client_cert = client_cert
        self._client_key = client_key
        self._ssl_context: ssl.SSLContext | None = None
        self._trust_env = trust_env
        self._max_idle = max_idle_per_origin
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        if client_cert:
            self._tls()  # a certificate or key that cannot be read is said now, not at the first delivery

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None,
             timeout: float | None = None) -> Response:
        return self.request("POST", url, content=content, headers=headers, timeout=timeout)

    def put(self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Response:
        return self.request("PUT", url, content=content, headers=headers, timeout=timeout)

    def get(self, url: str, *, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Response:
        return self.request("GET", url, params=params, headers=headers, timeout=timeout)

    def request(self, method: str, url: str, *, content: bytes = b"", headers: Mapping[str, str] | None = None,
                params: Mapping[str, str] | None = None, timeout: float | None = None) -> Response:
        """One request. ``timeout`` overrides the client's, for this request, as both the per-operation wait and
        the deadline (a slow look-up may be given longer than a create)."""
        if method not in _METHODS:
            raise InvalidRequest(f"method {method!r} is not one this client sends ({', '.join(sorted(_METHODS))})")
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        target = self._target(url)
        lines = [f"{method} {target.request_target} HTTP/1.1\r\n", target.fixed_headers]
        for name, value in (headers or {}).items():
            _check_header(name, value)
            lines.append(f"{name}: {value}\r\n")
        if content or method in _WITH_BODY:
            lines.append(f"Content-Length: {len(content)}\r\n")
        lines.append("\r\n")
        try:
            head = "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"a header holds {exc.object[exc.start:exc.end]!r}, which HTTP headers cannot "
                                 "carry (Latin-1 only)") from None
        deadline = Deadline(timeout or self._timeout, timeout or self._deadline)
        return self._exchange(target, method, head + content, deadline)

    def close(self) -> None:
        """Close every idle connection; safe to call more than once, and the client may still be used after."""
        with self._lock:
            connections = [connection for idle in self._idle.values() for connection in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()

    # --- the exchange -----------------------------------------------------------------------------------------

    def _exchange(self, target: _Target, method: str, data: bytes, deadline: Deadline) -> Response:
        connection, reused = self._checkout(target, deadline)
        try:
            try:
                connection.send(data, deadline)
            except (BrokenPipeError, ConnectionResetError) as exc:
                connection.close()
                if not reused:
                    raise RequestNotSent(f"the connection was reset while the request was being sent: {exc}") \
                        from None
                # The server had closed this idle connection: the request never reached it. Once more, afresh.
                connection = self._connect(target, deadline)
                try:
                    connection.send(data, deadline)
                except (BrokenPipeError, ConnectionResetError) as again:
                    raise RequestNotSent(f"{type(again).__name__}: {again}") from again
            response = connection.read_response(method, deadline, limit=self.max_response_bytes,
                                                decompressed_limit=self.max_decompressed_bytes)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            self._checkin(target, connection)
        else:
            connection.close()
        return response

    def _checkout(self, target: _Target, deadline: Deadline) -> tuple[Connection, bool]:
        """An idle connection the server has not closed meanwhile, else a new one; and whether it was idle."""
        while True:
            with self._lock:
                idle = self._idle.get(target.origin)
                connection = idle.pop() if idle else None
            if connection is None:
                return self._connect(target, deadline), False
            if not connection.is_stale():
                return connection, True
            connection.close()

    def _connect(self, target: _Target, deadline: Deadline) -> Connection:
        tls = self._tls() if target.scheme == "https" else None
        return Connection.open(target.connect_host, target.connect_port, deadline=deadline, tls=tls,
                               server_hostname=target.host, tunnel_to=target.tunnel)

    def _checkin(self, target: _Target, connection: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(target.origin, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                verify = self._verify
                if isinstance(verify, ssl.SSLContext):
                    context = verify
                else:
                    context = ssl.create_default_context(cafile=self._ca_file)
                    if not verify:
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                if self._client_cert:
                    try:
                        context.load_cert_chain(self._client_cert, self._client_key)
                    except (OSError, ssl.SSLError) as exc:
                        raise InvalidRequest(f"the client certificate could not be loaded: {exc}") from exc
                self._ssl_context = context
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
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidRequest(f"not a URL that can be requested: {redact_url(url)!r} ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidRequest(f"only http and https URLs can be requested, not {redact_url(url)!r}")
        if not parts.hostname:
            raise InvalidRequest(f"the URL has no host: {redact_url(url)!r}")
        default_port = 443 if scheme == "https" else 80
        port = port or default_port
        host_header = parts.netloc.rpartition("@")[2]
        if parts.port == default_port:
            host_header = host_header.rpartition(":")[0]
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        for text in (path, host_header):
            if any(character in text for character in " \r\n\t") or not text.isascii():
                raise InvalidRequest(f"the URL has spaces, line breaks or non-ASCII characters where none may be: "
                                     f"{redact_url(url)!r}")
        fixed = [f"Host: {host_header}\r\n", f"User-Agent: {_USER_AGENT}\r\n"]
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            fixed.append(f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n")
        fixed += [f"{name}: {value}\r\n" for name, value in self._default_headers.items()]
        host = parts.hostname
        proxy = self._proxy_for(scheme, host)
        if proxy is None:
            return _Target(scheme, host, port, path, "".join(fixed), host, port, path, None)
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if not proxy_parts.hostname or proxy_parts.scheme.lower() != "http":
            raise InvalidRequest(f"only http:// proxies are supported, not {redact_url(proxy)!r}")
        authorization = ""
        if proxy_parts.username is not None:
            credentials = f"{unquote(proxy_parts.username)}:{unquote(proxy_parts.password or '')}".encode()
            authorization = f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
        proxy_port = proxy_parts.port or 80
        if scheme == "https":  # a tunnel through the proxy, then TLS with the origin
            return _Target(scheme, host, port, path, "".join(fixed), proxy_parts.hostname, proxy_port, path,
                           (host, port, authorization))
        absolute = f"http://{host_header}{path}"
        return _Target(scheme, host, port, path, "".join(fixed) + authorization, proxy_parts.hostname, proxy_port,
                       absolute, None)

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        if not self._trust_env:
            return None
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(scheme) or proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(host):
            return None
        return proxy


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_header(name: str, value: str) -> None:
    """Refuse what would let a header end early and smuggle another one (or a second request) in."""
    if "\r" in value or "\n" in value or "\0" in value or not _HEADER_NAME.fullmatch(name):
        raise InvalidRequest(f"illegal header {name!r}: names take no ':' or spaces, values no line breaks")


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone at all: HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def raise_for_status(response: Response, *, system: str, prefix: str = "http") -> Response:
    """The response if it is a 2xx; otherwise the delivery error its status means.

    408, 429 and 503 are transient and say the request was not acted on (``may_have_landed=False``), with the
    ``Retry-After`` honoured; any other 5xx is transient and may have landed (a gateway may answer after the service
    behind it acted); anything else (3xx, 4xx) is permanent: the LOB system refused the request. ``system`` names
    the server in the message (``Alloy``, or a URL fit to show); ``prefix`` starts the reason (``http_404``).
    """
    status = response.status_code
    if 200 <= status < 300:
        return response
    excerpt = response.text[:_EXCERPT]
    message = f"HTTP {status} from {system}"
    if status in (408, 429) or status >= 500:
        raise TransientDeliveryError(f"{prefix}_{status}", message, response_excerpt=excerpt,
                                     retry_after=retry_after_seconds(response.header("Retry-After")),
                                     may_have_landed=status not in NOT_ACTED_ON)
    raise PermanentDeliveryError(f"{prefix}_{status}", message, response_excerpt=excerpt)
