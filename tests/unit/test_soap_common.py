"""The SOAP mechanism Confirm and Uniform share: safe parsing, faults, how refusals are classified, which failed
calls may have landed, and the cap on every answer (on the wire and decompressed)."""

from __future__ import annotations

import gzip
import socket
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from email.message import Message

import pytest
from lxml import etree
from support.soap_targets import answering

from adapters.common.soap import (
    CONTENT_TYPE,
    MalformedXml,
    SoapFault,
    UnsafeXml,
    body_content,
    envelope,
    parse_xml,
    raise_for_fault,
    soap_fault,
    without_namespaces,
)
from adapters.common.soap_client import DEFAULT_MAX_RESPONSE_BYTES, classify_fault, post, soap_http_client
from adapters.common.soap_server import SoapReply, SoapSimulatorServer, gzip_bomb
from broker.errors import PermanentDeliveryError, TransientDeliveryError


@pytest.mark.parametrize("document", [
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
    b'<r><!ENTITY a "a"></r>',
    b'<!DOCTYPE r SYSTEM "http://example.org/r.dtd"><r/>',
], ids=["xxe", "entity-declaration", "external-dtd"])
def test_documents_with_dtds_or_entities_are_refused_unread(document: bytes) -> None:
    with pytest.raises(UnsafeXml):
        parse_xml(document)


def test_not_xml_is_malformed() -> None:
    with pytest.raises(MalformedXml):
        parse_xml(b"Service Unavailable")


def test_a_soap_fault_is_raised_with_its_reason_and_envelopes_round_trip() -> None:
    with pytest.raises(SoapFault) as caught:
        raise_for_fault(parse_xml(soap_fault("Database connection lost")))
    assert (caught.value.reason, caught.value.code) == ("Database connection lost", "soap:Server")
    content = etree.Element("{urn:example}Answer", nsmap={"x": "urn:example"})
    etree.SubElement(content, "{urn:example}Value").text = "42"
    read = without_namespaces(body_content(parse_xml(envelope(content, {"x": "urn:example"}))))
    assert (read.tag, read.findtext("Value")) == ("Answer", "42")


@pytest.mark.parametrize(("reason", "soap", "expected", "error_reason"), [
    ("Logon failed: the password is not valid", False, PermanentDeliveryError, "x_authentication"),
    ("ComplaintType 'NOISE' is not a valid code", False, PermanentDeliveryError, "x_fault"),
    ("ComplaintType 'NOISE' is not a valid code", True, PermanentDeliveryError, "x_fault"),
    ("Server was unable to process request. Database connection lost", True, TransientDeliveryError,
     "x_soap_fault"),
])
def test_refusals_are_classified_by_their_words(reason: str, soap: bool, expected: type[Exception],
                                                error_reason: str) -> None:
    error = classify_fault(reason, system="X", key="x", refused="the request", soap=soap)
    assert isinstance(error, expected) and error.reason == error_reason and reason in error.message


class EchoServer(SoapSimulatorServer):
    """Answers every request with the same small SOAP document, unless told to misbehave."""

    def respond(self, body: bytes, headers: Message) -> SoapReply:
        content = etree.Element("Answer")
        etree.SubElement(content, "Value").text = "42"
        return SoapReply(envelope(content))


@pytest.fixture
def server() -> Iterator[EchoServer]:
    echo = EchoServer()
    yield echo
    echo.close()


def call(server: EchoServer, *, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> etree._Element:
    client = soap_http_client(max_bytes, {"Content-Type": CONTENT_TYPE})
    try:
        _response, root = post(client, server.url, b"<x/>", timeout=30, system="Server", key="server")
    finally:
        client.close()
    return root


@pytest.mark.parametrize("misbehave", ["300MB-declared", "300MB-streamed", "1MB-gzip-bomb"])
def test_a_huge_or_inflating_answer_is_refused_with_memory_bounded(misbehave: str, server: EchoServer) -> None:
    if misbehave == "1MB-gzip-bomb":
        assert 900_000 < len(gzip_bomb()) < 1_200_000  # made before measuring: it inflates to 1 GiB
        server.gzip_bomb_next()
    else:
        server.huge_next(300 * 1024 * 1024, declared=misbehave == "300MB-declared")
    tracemalloc.start()
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            call(server)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "response_too_large" and caught.value.may_have_landed
    assert "max_response_bytes" in caught.value.message and "10,485,760" in caught.value.message
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1024 / 1024:.0f} MiB"
    assert call(server).findtext(".//Value") == "42"  # the next answer is read as ever


def test_the_cap_is_the_targets_own(server: EchoServer) -> None:
    server.huge_next(200 * 1024, declared=False)
    with pytest.raises(TransientDeliveryError) as caught:
        call(server, max_bytes=100 * 1024)
    assert caught.value.reason == "response_too_large" and "102,400" in caught.value.message
    server.huge_next(200 * 1024, declared=True)
    with pytest.raises(TransientDeliveryError):  # a comment without an end: read whole, then refused as not XML
        call(server, max_bytes=300 * 1024)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_answers_within_the_cap_are_read(coding: str) -> None:
    document = envelope(etree.Element("Answer"))
    if coding == "gzip":
        body = gzip.compress(document)
    else:
        compressor = zlib.compressobj(wbits=zlib.MAX_WBITS if coding == "deflate" else -zlib.MAX_WBITS)
        body = compressor.compress(document) + compressor.flush()
    header = "gzip" if coding == "gzip" else "deflate"
    client = soap_http_client(DEFAULT_MAX_RESPONSE_BYTES, {"Content-Type": CONTENT_TYPE})
    with answering(lambda _body: (200, body, {"Content-Encoding": header})) as url:
        _response, root = post(client, url, b"<x/>", timeout=5, system="Server", key="server")
    client.close()
    assert body_content(root).tag == "Answer"


def test_calls_that_cannot_have_landed_say_so(server: EchoServer) -> None:
    def failure(prepare: Callable[[], None], url: str = "") -> TransientDeliveryError:
        prepare()
        client = soap_http_client(DEFAULT_MAX_RESPONSE_BYTES, {"Content-Type": CONTENT_TYPE})
        with pytest.raises(TransientDeliveryError) as caught:
            post(client, url or server.url, b"<x/>", timeout=0.5, system="Server", key="server")
        client.close()
        return caught.value

    assert not failure(lambda: server.fail_next(503)).may_have_landed
    assert not failure(lambda: server.fail_next(429)).may_have_landed
    assert failure(lambda: server.fail_next(500)).may_have_landed
    assert failure(lambda: server.slow_next(1.5)).may_have_landed  # sent, then no answer in time
    assert failure(server.drop_next).may_have_landed  # dropped after sending
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}/"
    refused = failure(lambda: None, closed)
    assert (refused.reason, refused.may_have_landed) == ("connection", False)
