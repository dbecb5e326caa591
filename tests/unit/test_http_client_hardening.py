"""The one HTTP client against crafted servers: what it refuses to read, the limits it keeps, and how every failure
is classified (transient or permanent, and whether the request may have landed)."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_http_client import RawServer, _self_signed_certificate, response

from broker.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from broker.sdk import (
    ConnectFailed,
    HttpClient,
    InvalidRequest,
    RequestTimedOut,
    ResponseBroken,
    ResponseTooLarge,
    raise_for_status,
)
from broker.sdk.http_client import Response


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(reply: Callable[[bytes], bytes | None], **options: Any) -> RawServer:
        servers.append(RawServer(reply, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[HttpClient]:
    client = HttpClient(timeout=2, trust_env=False)
    yield client
    client.close()


@pytest.mark.parametrize("head", [
    b"Content-Length: \xc2\xb2\r\n",                         # a superscript two: a digit to str.isdigit()
    b"Content-Length: 3\r\nContent-Length: 3\r\n",           # duplicated
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",  # both framings at once
    b"Transfer-Encoding: gzip\r\nContent-Length: 3\r\n",     # a coding we do not undo, beside a length
    b"Transfer-Encoding: gzip\r\n",                          # a coding we do not undo, to the end of the connection
    b"Transfer-Encoding: gzip, chunked\r\n",
], ids=["superscript-length", "two-lengths", "chunked-and-length", "gzip-and-length", "gzip", "gzip-chunked"])
def test_a_framing_the_parser_refuses_is_a_broken_answer(serve: Callable[..., RawServer], client: HttpClient,
                                                         head: bytes) -> None:
    server = serve(lambda _: b"HTTP/1.1 200 OK\r\n" + head + b"\r\n3\r\nabc\r\n0\r\n\r\n")
    with pytest.raises(ResponseBroken) as raised:
        client.post(server.url, content=b"{}")
    assert raised.value.reason == "malformed_answer"
    assert raised.value.may_have_landed  # the request went out: the server may have acted on it


@pytest.mark.parametrize("size", [b"0x3", b"-1", b"1_0", b"+3", b" 3"])
def test_a_chunk_size_that_is_not_plain_hex_is_refused(serve: Callable[..., RawServer], client: HttpClient,
                                                       size: bytes) -> None:
    server = serve(lambda _: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabc\r\n0\r\n\r\n")
    with pytest.raises(ResponseBroken, match="chunk size"):
        client.get(server.url)


def test_a_header_value_outside_latin_1_is_a_permanent_refusal_and_nothing_is_sent(
        serve: Callable[..., RawServer], client: HttpClient) -> None:
    server = serve(lambda _: response())
    with pytest.raises(InvalidRequest) as raised:
        client.post(server.url, content=b"{}", headers={"X-Council": "Bromley \u2014 highways"})
    assert isinstance(raised.value, PermanentDeliveryError)
    assert "Latin-1" in raised.value.message
    assert server.requests == []
    with pytest.raises(InvalidRequest):
        HttpClient(timeout=1, headers={"X-Bad": "a\r\nX-Injected: 1"})


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n" * 1
    + b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000,
], ids=["content-length", "chunked", "until-close"])
def test_a_body_over_the_limit_is_refused_however_it_is_framed(serve: Callable[..., RawServer],
                                                               answer: bytes) -> None:
    server = serve(lambda _: answer, close_after_each=True)
    client = HttpClient(timeout=2, trust_env=False, max_response_bytes=4096)
    with closing(client), pytest.raises(ResponseTooLarge) as raised:
        client.get(server.url)
    assert isinstance(raised.value, TransientDeliveryError) and raised.value.may_have_landed
    assert raised.value.reason == "response_too_large"


def test_decompression_has_its_own_limit(serve: Callable[..., RawServer]) -> None:
    packed = gzip.compress(b"x" * 100_000)
    server = serve(lambda _: response(200, packed, "Content-Encoding: gzip"))
    generous = HttpClient(timeout=2, trust_env=False, max_response_bytes=200_000)
    with closing(generous):
        assert len(generous.get(server.url).content) == 100_000
    strict = HttpClient(timeout=2, trust_env=False, max_response_bytes=200_000, max_decompressed_bytes=50_000)
    with closing(strict), pytest.raises(ResponseTooLarge, match="once decompressed"):
        strict.get(server.url)


def test_a_server_trickling_its_answer_is_cut_off_at_the_deadline(serve: Callable[..., RawServer]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_slowly() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.05)  # each byte well within the per-operation timeout

    threading.Thread(target=serve_slowly, daemon=True).start()
    client = HttpClient(timeout=1.0, deadline=0.6, trust_env=False)
    started = time.monotonic()
    with closing(client), closing(listener), pytest.raises(RequestTimedOut) as raised:
        client.get(f"http://127.0.0.1:{port}/")
    assert time.monotonic() - started < 1.0
    assert raised.value.may_have_landed and raised.value.reason == "timeout"


def test_a_refused_connection_cannot_have_landed(client: HttpClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectFailed) as raised:
        client.post(f"http://127.0.0.1:{port}/", content=b"{}")
    assert (raised.value.reason, raised.value.may_have_landed) == ("connection", False)


def test_every_failure_is_a_delivery_error() -> None:
    for error in (ConnectFailed, RequestTimedOut, ResponseBroken, ResponseTooLarge, InvalidRequest):
        assert issubclass(error, DeliveryError)


@pytest.mark.parametrize(("status", "kind", "landed"), [
    (408, TransientDeliveryError, False), (429, TransientDeliveryError, False), (503, TransientDeliveryError, False),
    (500, TransientDeliveryError, True), (502, TransientDeliveryError, True), (504, TransientDeliveryError, True),
    (400, PermanentDeliveryError, None), (404, PermanentDeliveryError, None), (422, PermanentDeliveryError, None),
])
def test_statuses_are_classified(status: int, kind: type[DeliveryError], landed: bool | None) -> None:
    answer = Response(status, "X", [("Retry-After", "7")], b"no", keep_alive=True)
    with pytest.raises(kind) as raised:
        raise_for_status(answer, system="the LOB")
    assert raised.value.reason == f"http_{status}"
    if isinstance(raised.value, TransientDeliveryError):
        assert raised.value.may_have_landed is landed
        assert raised.value.retry_after == 7.0
    assert raise_for_status(Response(201, "Created", [], b"", True), system="x").status_code == 201


def _tls_server_context(tmp_path: Path, *, require_client: bool) -> tuple[ssl.SSLContext, Path, Path]:
    certificate, key = _self_signed_certificate(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(certificate, key)
    if require_client:
        server_side.verify_mode = ssl.CERT_REQUIRED
        server_side.load_verify_locations(cafile=str(certificate))
    return server_side, certificate, key


def test_mutual_tls_sends_the_client_certificate(serve: Callable[..., RawServer], tmp_path: Path) -> None:
    server_side, certificate, key = _tls_server_context(tmp_path, require_client=True)
    server = serve(lambda _: response(), tls=server_side)
    with_certificate = HttpClient(timeout=2, trust_env=False, ca_file=str(certificate),
                                  client_cert=str(certificate), client_key=str(key))
    with closing(with_certificate):
        assert with_certificate.get(server.url).status_code == 200
    without = HttpClient(timeout=2, trust_env=False, ca_file=str(certificate))
    with closing(without), pytest.raises(TransientDeliveryError):
        without.get(server.url)  # refused in the handshake, or the connection dropped straight after it


def test_an_unreadable_client_certificate_is_said_at_once(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="client certificate"):
        HttpClient(timeout=1, client_cert=str(tmp_path / "missing.pem"))


def test_https_goes_through_a_proxy_tunnel(serve: Callable[..., RawServer], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    server_side, certificate, _ = _tls_server_context(tmp_path, require_client=False)
    origin = serve(lambda _: response(201, b'{"reference":"TLS-1"}'), tls=server_side)
    listener = socket.create_server(("127.0.0.1", 0))
    asked: list[bytes] = []

    def tunnel() -> None:
        client_side, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += client_side.recv(1)
        asked.append(head)
        upstream = socket.create_connection(("127.0.0.1", origin.port))
        client_side.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump, args=(upstream, client_side), daemon=True).start()
        pump(client_side, upstream)

    threading.Thread(target=tunnel, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:pw@127.0.0.1:{listener.getsockname()[1]}")
    client = HttpClient(timeout=2, ca_file=str(certificate))
    with closing(client), closing(listener):
        answer = client.post(f"https://127.0.0.1:{origin.port}/cases", content=b"{}")
    assert (answer.status_code, answer.content) == (201, b'{"reference":"TLS-1"}')
    assert asked[0].startswith(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n".encode())
    assert b"\r\nProxy-Authorization: Basic dXNlcjpwdw==\r\n" in asked[0]
    assert origin.requests[0].startswith(b"POST /cases HTTP/1.1\r\n")
