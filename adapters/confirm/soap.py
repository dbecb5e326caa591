"""Confirm's connector web service on the wire: SOAP 1.1 envelopes built and read with lxml, safely.

A request is ``ProcessOperationsRequest`` > ``Request`` holding ``Authentication`` and one ``Operation`` per
operation. The answer holds one ``OperationResponse`` per operation; errors come back either inside an HTTP 200
as ``Fault`` > ``Reason`` (for the whole request or for one operation) or as a SOAP fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
CONFIRM_NS = "http://www.confirm.co.uk/schema/am/connector/webservice"
SOAP_ACTION = f"{CONFIRM_NS}/ProcessOperations"
CONTENT_TYPE = "text/xml; charset=utf-8"

#: Entities and DTDs are never resolved, nothing is fetched from the network, and huge trees are refused.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_blank_text=True)


class UnsafeXml(ValueError):
    """A document carrying a DTD or entity declarations (XXE, billion laughs): refused unread."""


class MalformedXml(ValueError):
    """Not XML, or not the SOAP shape expected."""


@dataclass(frozen=True)
class OperationResult:
    """One operation's answer: its response element, or the reason Confirm gave for refusing it."""

    element: etree._Element | None
    fault: str | None = None


def parse_xml(body: bytes) -> etree._Element:
    """Parse a document from the network; anything with a DOCTYPE is refused before it is parsed."""
    head = body[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in body.lower():
        raise UnsafeXml("the document declares a DTD or entities, which are never accepted")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise MalformedXml(f"not well-formed XML: {exc}") from exc
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise UnsafeXml("the document declares a DTD, which is never accepted")
    return root


def sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def request_envelope(username: str, password: str, database_id: str, operations: list[etree._Element]) -> bytes:
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS, "web": CONFIRM_NS})
    body = sub(envelope, f"{{{SOAP_NS}}}Body")
    request = sub(sub(body, f"{{{CONFIRM_NS}}}ProcessOperationsRequest"), "Request")
    authentication = sub(request, "Authentication")
    sub(authentication, "Username", username)
    sub(authentication, "Password", password)
    sub(authentication, "DatabaseId", database_id)
    for operation in operations:
        sub(request, "Operation").append(operation)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def response_envelope(response: etree._Element) -> bytes:
    """Wrap a ``Response`` element as Confirm answers (used by the simulator)."""
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS, "web": CONFIRM_NS})
    result = sub(sub(envelope, f"{{{SOAP_NS}}}Body"), f"{{{CONFIRM_NS}}}ProcessOperationsResult")
    result.append(response)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def soap_fault(message: str) -> bytes:
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS})
    fault = sub(sub(envelope, f"{{{SOAP_NS}}}Body"), f"{{{SOAP_NS}}}Fault")
    sub(fault, "faultcode", "soap:Server")
    sub(fault, "faultstring", message)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


class RequestFault(Exception):
    """Confirm refused the whole request (``Response`` > ``Fault`` > ``Reason``, or a SOAP fault)."""

    def __init__(self, reason: str, *, soap: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.soap = soap


def operation_results(body: bytes) -> list[OperationResult]:
    """Each ``OperationResponse`` in order; raises RequestFault if the request as a whole was refused."""
    root = parse_xml(body)
    soap_fault_element = root.find(f".//{{{SOAP_NS}}}Fault")
    if soap_fault_element is not None:
        raise RequestFault(soap_fault_element.findtext("faultstring") or "SOAP fault", soap=True)
    response = next(root.iter("Response"), None)
    if response is None:
        raise MalformedXml("no Response element in the answer")
    fault = response.find("Fault")
    if fault is not None:
        raise RequestFault((fault.findtext("Reason") or "").strip() or "fault without a reason")
    results = []
    for operation in response.findall("OperationResponse"):
        child = next(iter(operation), None)
        if child is not None and child.tag == "Fault":
            results.append(OperationResult(None, (child.findtext("Reason") or "").strip()))
        else:
            results.append(OperationResult(child))
    return results
