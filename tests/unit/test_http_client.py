"""The adapters' one HTTP client: connections kept alive and reused, responses framed every way HTTP/1.1 allows,
every failure raised as a classified delivery error."""

from __future__ import annotations

import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.sdk.http_client import (
    ConnectFailed,
    HttpClient,
    InvalidRequest,
    RequestTimedOut,
    ResponseBroken,
)

Reply = Callable[[bytes], bytes | None]


@dataclass
class RawServer:
    """A loopback HTTP/1.1 server written on bare sockets, so each test controls exactly what goes on the wire."""

    reply: Reply
    close_after_each: bool = False
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    client = self.tls.wrap_socket(client, server_side=True)
                except OSError:
                    client.close()
                    continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffer) < length:
                    buffer += client.recv(65536)
                request, buffer = head + b"\r\n\r\n" + buffer[:length], buffer[length:]
                self.requests.append(request)
                answer = self.reply(request)
                if answer is None:
                    return  # hang up without a word
                client.sendall(answer)
                if self.close_after_each:
                    return

    def close(self) -> None:
        self.listener.close()


def response(status: int = 200, body: bytes = b'{"reference":"R-1"}', *extra: str) -> bytes:
    headers = [f"HTTP/1.1 {status} OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(reply: Reply, **options: Any) -> RawServer:
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


def test_requests_to_one_origin_share_one_connection(serve: Callable[..., RawServer], client: HttpClient) -> None:
    server = serve(lambda _: response())
    answers = [client.post(f"{server.url}/cases", content=b'{"n": %d}' % n) for n in range(5)]
    assert [json.loads(answer.content) for answer in answers] == [{"reference": "R-1"}] * 5
    assert server.connections == 1
    assert len(server.requests) == 5


def test_the_request_goes_out_whole_with_one_host_and_length(serve: Callable[..., RawServer],
                                                             client: HttpClient) -> None:
    server = serve(lambda _: response(201))
    answer = client.post(f"{server.url}/a/b?x=1&y=%20", content=b"hello", headers={"Idempotency-Key": "k-1"})
    assert answer.status_code == 201
    request = server.requests[0]
    assert request.startswith(b"POST /a/b?x=1&y=%20 HTTP/1.1\r\n")
    head = request.split(b"\r\n\r\n")[0].lower()
    assert b"\r\nidempotency-key: k-1" in head
    assert head.count(b"\r\nhost: ") == 1 and head.count(b"\r\ncontent-length: 5") == 1
    assert request.endswith(b"\r\n\r\nhello")


def test_a_connection_the_server_closed_while_idle_is_replaced(serve: Callable[..., RawServer],
                                                               client: HttpClient) -> None:
    server = serve(lambda _: response(), close_after_each=True)  # keeps nothing alive, without saying so
    for _ in range(3):
        assert client.get(server.url).status_code == 200
        time.sleep(0.05)  # the server's close reaches us before the next request
    assert server.connections == 3
    assert len(server.requests) == 3


def test_connection_close_is_honoured(serve: Callable[..., RawServer], client: HttpClient) -> None:
    server = serve(lambda _: response(200, b"{}", "Connection: close"), close_after_each=True)
    for _ in range(3):
        assert json.loads(client.get(server.url).content) == {}
    assert server.connections == 3


def test_compressed_and_chunked_bodies_are_decoded(serve: Callable[..., RawServer], client: HttpClient) -> None:
    packed = gzip.compress(b'{"reference":"GZ-1"}')
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"6\r\n{\"refe\r\ne\r\nrence\":\"CH-1\"}\r\n0\r\n\r\n")
    replies = iter([response(200, packed, "Content-Encoding: gzip"), chunked])
    server = serve(lambda _: next(replies))
    assert json.loads(client.get(server.url).content) == {"reference": "GZ-1"}
    assert json.loads(client.get(server.url).content) == {"reference": "CH-1"}
    assert server.connections == 1


def test_a_server_that_hangs_up_unanswered_is_a_protocol_error_and_not_resent(
        serve: Callable[..., RawServer], client: HttpClient) -> None:
    server = serve(lambda _: None)
    with pytest.raises(ResponseBroken):
        client.post(server.url, content=b"{}")
    assert len(server.requests) == 1


def test_no_answer_in_time_is_a_read_timeout(serve: Callable[..., RawServer]) -> None:
    def slow(_: bytes) -> bytes:
        time.sleep(1.0)
        return response()

    server = serve(slow)
    client = HttpClient(timeout=0.3, trust_env=False)
    with closing(client), pytest.raises(RequestTimedOut):
        client.get(server.url)


def test_nobody_listening_is_a_connect_error(client: HttpClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectFailed):
        client.get(f"http://127.0.0.1:{port}/")


def test_a_garbled_status_line_is_a_protocol_error(serve: Callable[..., RawServer], client: HttpClient) -> None:
    server = serve(lambda _: b"SMTP ready\r\n\r\n")
    with pytest.raises(ResponseBroken):
        client.get(server.url)


def test_threads_share_the_transport_safely(serve: Callable[..., RawServer], client: HttpClient) -> None:
    server = serve(lambda _: response())
    failures: list[BaseException] = []

    def send_many() -> None:
        try:
            for _ in range(20):
                assert json.loads(client.get(server.url).content) == {"reference": "R-1"}
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(server.requests) == 80
    assert server.connections <= 4


def test_the_default_headers_and_the_url_s_credentials_go_with_every_request(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda _: response())
    client = HttpClient(timeout=2, trust_env=False, headers={"X-Council": "Northshire"})
    with closing(client):
        client.get(f"http://svc:p%40ss@127.0.0.1:{server.port}/status", params={"id": "a b&c"})
    head = server.requests[0].split(b"\r\n\r\n")[0]
    assert head.startswith(b"GET /status?id=a+b%26c HTTP/1.1\r\n")
    assert b"\r\nX-Council: Northshire" in head
    assert b"\r\nAuthorization: Basic c3ZjOnBAc3M=" in head  # svc:p@ss
    assert f"\r\nHost: 127.0.0.1:{server.port}".encode() in head
    assert b"content-length" not in head.lower()  # a GET without a body says nothing of one


@pytest.mark.parametrize("name, value", [("X-Evil", "a\r\nX-Injected: 1"), ("X Bad", "v"), ("X-Bad:", "v")])
def test_a_header_that_could_smuggle_another_is_refused(serve: Callable[..., RawServer], client: HttpClient,
                                                         name: str, value: str) -> None:
    server = serve(lambda _: response())
    with pytest.raises(InvalidRequest):
        client.post(server.url, content=b"{}", headers={name: value})
    assert server.requests == []


def test_a_body_ended_by_closing_the_connection_is_read_whole(serve: Callable[..., RawServer],
                                                              client: HttpClient) -> None:
    server = serve(lambda _: b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", close_after_each=True)
    assert client.get(server.url).content == b"all of it"
    assert client.get(server.url).text == "all of it"
    assert server.connections == 2  # HTTP/1.0 without keep-alive: never reused


def test_informational_responses_are_passed_over(serve: Callable[..., RawServer], client: HttpClient) -> None:
    server = serve(lambda _: b"HTTP/1.1 100 Continue\r\n\r\n" + response(202, b"{}"))
    assert client.post(server.url, content=b"{}").status_code == 202


def test_headers_are_read_case_insensitively_and_text_in_the_named_charset(serve: Callable[..., RawServer],
                                                                           client: HttpClient) -> None:
    body = "Café fermé".encode("cp1252")
    server = serve(lambda _: (b"HTTP/1.1 503 Busy\r\nRETRY-AFTER: 7\r\nContent-Type: text/plain; charset=cp1252"
                              b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    answer = client.get(server.url)
    assert (answer.status_code, answer.reason) == (503, "Busy")
    assert answer.header("Retry-After") == "7"
    assert answer.text == "Café fermé"


@pytest.mark.parametrize("lengths, named", [((b"2", b"3"), "Duplicate Content-Length"),
                                           ((b"abc",), "Invalid character in Content-Length")])
def test_conflicting_or_garbled_content_lengths_are_a_protocol_error(
        serve: Callable[..., RawServer], client: HttpClient, lengths: tuple[bytes, ...], named: str) -> None:
    head = b"".join(b"Content-Length: %s\r\n" % length for length in lengths)
    server = serve(lambda _: b"HTTP/1.1 200 OK\r\n" + head + b"\r\n{}")
    with pytest.raises(ResponseBroken, match=named) as raised:
        client.get(server.url)
    assert (raised.value.reason, raised.value.may_have_landed) == ("malformed_answer", True)


def test_https_with_the_certificate_verified(serve: Callable[..., RawServer], tmp_path: Path) -> None:
    certificate, key = _self_signed_certificate(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(certificate, key)
    server = serve(lambda _: response(), tls=server_side)
    trusting = ssl.create_default_context(cafile=str(certificate))
    client = HttpClient(timeout=2, trust_env=False, verify=trusting)
    with closing(client):
        assert [client.get(server.url).status_code for _ in range(3)] == [200] * 3
    assert server.connections == 1
    doubting = HttpClient(timeout=2, trust_env=False)  # the system's trust store has never heard of this one
    with closing(doubting), pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        doubting.get(server.url)


def test_an_origin_behind_a_proxy_is_sent_through_it(serve: Callable[..., RawServer],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve(lambda _: response(201, b'{"reference":"VIA-PROXY"}'))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = HttpClient(timeout=2)
    with closing(client):
        answer = client.post("http://lob.council.example/cases", content=b"{}", headers={"Idempotency-Key": "k"})
    assert (answer.status_code, answer.content) == (201, b'{"reference":"VIA-PROXY"}')
    request = proxy.requests[0]
    assert request.startswith(b"POST http://lob.council.example/cases HTTP/1.1\r\n")  # the proxy's absolute form
    assert b"\r\nidempotency-key: k" in request.lower()


def test_no_proxy_sends_straight_to_the_origin(serve: Callable[..., RawServer],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve(lambda _: response(502))
    origin = serve(lambda _: response())
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = HttpClient(timeout=2)
    with closing(client):
        assert client.get(origin.url).status_code == 200
    assert proxy.requests == []


def _self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    certificate_path, key_path = folder / "cert.pem", folder / "key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_path, key_path
