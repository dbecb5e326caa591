"""The SOAP mechanism Confirm and Uniform share: safe parsing, faults, and how refusals are classified."""

from __future__ import annotations

import pytest
from lxml import etree

from adapters.common.soap import (
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
from adapters.common.soap_client import classify_fault
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
