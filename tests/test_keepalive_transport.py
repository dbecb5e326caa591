"""The adapters' HTTP transport: connections kept alive and reused, errors mapped to httpx's classes."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from adapters.common.keepalive import KeepAliveTransport

Reply = Callable[[bytes], bytes | None]


@dataclass
class RawServer:
    """A loopback HTTP/1.1 server written on bare sockets, so each test controls exactly what goes on the wire."""

    reply: Reply
    close_after_each: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
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

    def start(reply: Reply, **options: bool) -> RawServer:
        servers.append(RawServer(reply, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(transport=KeepAliveTransport(), timeout=2) as client:
        yield client


def test_requests_to_one_origin_share_one_connection(serve: Callable[..., RawServer], client: httpx.Client) -> None:
    server = serve(lambda _: response())
    answers = [client.post(f"{server.url}/cases", json={"n": n}) for n in range(5)]
    assert [answer.json() for answer in answers] == [{"reference": "R-1"}] * 5
    assert server.connections == 1
    assert len(server.requests) == 5


def test_the_request_goes_out_as_httpx_built_it(serve: Callable[..., RawServer], client: httpx.Client) -> None:
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
                                                               client: httpx.Client) -> None:
    server = serve(lambda _: response(), close_after_each=True)  # keeps nothing alive, without saying so
    for _ in range(3):
        assert client.get(server.url).status_code == 200
        time.sleep(0.05)  # the server's close reaches us before the next request
    assert server.connections == 3
    assert len(server.requests) == 3


def test_connection_close_is_honoured(serve: Callable[..., RawServer], client: httpx.Client) -> None:
    server = serve(lambda _: response(200, b"{}", "Connection: close"), close_after_each=True)
    for _ in range(3):
        assert client.get(server.url).json() == {}
    assert server.connections == 3


def test_compressed_and_chunked_bodies_are_decoded(serve: Callable[..., RawServer], client: httpx.Client) -> None:
    packed = gzip.compress(b'{"reference":"GZ-1"}')
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"6\r\n{\"refe\r\ne\r\nrence\":\"CH-1\"}\r\n0\r\n\r\n")
    replies = iter([response(200, packed, "Content-Encoding: gzip"), chunked])
    server = serve(lambda _: next(replies))
    assert client.get(server.url).json() == {"reference": "GZ-1"}
    assert client.get(server.url).json() == {"reference": "CH-1"}
    assert server.connections == 1


def test_a_server_that_hangs_up_unanswered_is_a_protocol_error_and_not_resent(
        serve: Callable[..., RawServer], client: httpx.Client) -> None:
    server = serve(lambda _: None)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(server.url, content=b"{}")
    assert len(server.requests) == 1


def test_no_answer_in_time_is_a_read_timeout(serve: Callable[..., RawServer]) -> None:
    def slow(_: bytes) -> bytes:
        time.sleep(1.0)
        return response()

    server = serve(slow)
    with httpx.Client(transport=KeepAliveTransport(), timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.get(server.url)


def test_nobody_listening_is_a_connect_error(client: httpx.Client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")


def test_a_garbled_status_line_is_a_protocol_error(serve: Callable[..., RawServer], client: httpx.Client) -> None:
    server = serve(lambda _: b"SMTP ready\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url)


def test_threads_share_the_transport_safely(serve: Callable[..., RawServer], client: httpx.Client) -> None:
    server = serve(lambda _: response())
    failures: list[BaseException] = []

    def send_many() -> None:
        try:
            for _ in range(20):
                assert client.get(server.url).json() == {"reference": "R-1"}
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
