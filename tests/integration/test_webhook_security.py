"""The webhook target as an attacker or a broken receiver would have it: credentials in its URL, answers without
end, compressed answers that inflate a thousandfold."""

from __future__ import annotations

import functools
import json
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from support.console import officer_client
from support.envelopes import case_created
from support.harness import RunningBroker, write_mappings
from support.raw_http import peak_memory, reset_peak_memory
from support.receiver import Answer, WebhookReceiver

from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.config import WebhookConfig
from broker.errors import TransientDeliveryError
from broker.model import parse_event
from broker.plugins.contract import DeliveryRequest
from broker.store.tables import Base

MIB = 1024 * 1024
SECRET = "s3cr3t-pw"


def test_credentials_in_a_target_url_are_never_recorded_or_shown(
        broker_with: Callable[..., RunningBroker], receiver: WebhookReceiver, tmp_path: Path) -> None:
    with_secret = receiver.url.replace("http://", f"http://casebridge:{SECRET}@") + "/highways?token=tok-" + SECRET
    mappings = write_mappings(tmp_path / "secret-mappings", receiver.url)
    routes = (mappings / "routes.yaml").read_text()
    (mappings / "routes.yaml").write_text(routes.replace(f"url: {receiver.url}/highways\n", f"url: {with_secret}\n", 1))
    running = broker_with(mappings_dir=mappings)
    receiver.answer("/highways?token=tok-" + SECRET, Answer(status=422, body={"error": "street not adopted"}))
    running.post_case(case_created("SECRET-1"))
    running.wait_settled()
    sent = receiver.on("/highways?token=tok-" + SECRET)
    assert sent and sent[0].headers["authorization"].startswith("Basic ")  # still used, as Basic authentication

    case = running.client.get("/v1/cases/SECRET-1").json()
    assert case["deliveries"][0]["state"] == "failed"
    assert "HTTP 422 from http://127.0.0.1" in case["deliveries"][0]["last_error"]
    history = running.client.get("/v1/cases/SECRET-1/history").text
    viewer = officer_client(running.broker.store, running.base_url, "vera", "viewer")
    listed = viewer.get("/v1/console/failed").json()
    failed_id = listed["rows"][0]["id"]
    shown = [history, str(case), str(listed), viewer.get(f"/v1/console/failed/{failed_id}").text,
             viewer.get(f"/console/failed/{failed_id}").text, viewer.get("/console/groups").text]
    viewer.close()
    for text in shown:
        assert SECRET not in text
    with running.broker.store.read() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                assert SECRET not in repr(tuple(row)), f"{table.name} keeps the secret: {row}"


class EndlessServer:
    """Answers every request with ``head`` and then ``body_chunks()``, sent as they come; counts what it sent."""

    def __init__(self, head: bytes, body_chunks: Callable[[], Iterator[bytes]]) -> None:
        self.head, self.body_chunks, self.sent = head, body_chunks, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                try:
                    client.sendall(self.head)
                    for chunk in self.body_chunks():
                        client.sendall(chunk)
                        self.sent += len(chunk)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def _ones(count: int, size: int = MIB) -> Callable[[], Iterator[bytes]]:
    block = b"1" * size
    return lambda: iter([block] * count)


def _chunked(count: int) -> Callable[[], Iterator[bytes]]:
    block = f"{MIB:x}\r\n".encode() + b"1" * MIB + b"\r\n"
    return lambda: iter([block] * count + [b"0\r\n\r\n"])


@functools.cache
def bomb(wbits: int, mib: int) -> bytes:
    """About mib/1000 MiB of gzip (wbits 31) or zlib (15) data that inflates to ``mib`` MiB of zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(MIB)
    return b"".join(packer.compress(block) for _ in range(mib)) + packer.flush()


def _compressed(coding: str, status: str = "200 OK") -> tuple[bytes, Callable[[], Iterator[bytes]]]:
    data = bomb(31, 1024) if coding == "gzip" else bomb(15, 300)
    head = f"HTTP/1.1 {status}\r\nContent-Encoding: {coding}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    return head, lambda: iter([data])


@pytest.mark.parametrize("head, chunks", [
    (f"HTTP/1.1 200 OK\r\nContent-Length: {300 * MIB}\r\n\r\n".encode(), _ones(300)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", _chunked(300)),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", _ones(300)),
    _compressed("gzip"),
    _compressed("deflate", "500 Oops"),
], ids=["content-length", "chunked", "until-close", "gzip-bomb", "deflate-bomb"])
def test_an_answer_too_large_is_a_transient_failure_read_no_further_than_the_limit(
        head: bytes, chunks: Callable[[], Iterator[bytes]]) -> None:
    server = EndlessServer(head, chunks)
    adapter = WebhookAdapter("highways", WebhookConfig.model_validate(
        {"url": server.url, "timeout_seconds": 5, "max_response_bytes": 2 * MIB}), {})
    request = DeliveryRequest(target="highways", event=parse_event(json.dumps(case_created("BIG-1"))),
                              our_reference="CB-1", external_ref=None, attempt=1)
    before = reset_peak_memory()
    with pytest.raises(TransientDeliveryError) as raised:
        adapter.deliver(request)
    grown = peak_memory() - before
    adapter.close()
    server.close()
    assert raised.value.reason == "response_too_large"
    assert "over the limit of 2097152 bytes" in raised.value.message
    assert grown < 30 * MIB, f"peak memory grew by {grown // MIB} MiB"


def test_the_client_limit_applies_through_a_proxy_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.sdk import HttpClient, ResponseTooLarge, TransientDeliveryError

    server = EndlessServer(f"HTTP/1.1 200 OK\r\nContent-Length: {50 * MIB}\r\n\r\n".encode(), _ones(50))
    port = server.url.split(":")[2].split("/")[0]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")  # the "proxy" answers every request itself
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpClient(timeout=5, max_response_bytes=MIB)
    with pytest.raises(ResponseTooLarge):
        client.get("http://lob.invalid/status")
    client.close()
    server.close()
    assert isinstance(ResponseTooLarge(1), TransientDeliveryError)
