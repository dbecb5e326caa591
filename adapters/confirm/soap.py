"""Confirm's connector web service on the wire: SOAP 1.1 envelopes built and read with lxml, safely.

A request is ``ProcessOperationsRequest`` > ``Request`` holding ``Authentication`` and one ``Operation`` per
operation. The answer holds one ``OperationResponse`` per operation; errors come back either inside an HTTP 200
as ``Fault`` > ``Reason`` (for the whole request or for one operation) or as a SOAP fault.

Answers are read without their namespaces: a Confirm service answers in its own namespace (usually as the default
namespace, so ``Response`` and everything under it are namespaced), and which prefix or version it uses must not
matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from adapters.common.soap import (
    CONTENT_TYPE,
    SOAP_NS,
    MalformedXml,
    UnsafeXml,
    body_content,
    envelope,
    in_namespace,
    local_name,
    parse_xml,
    soap_fault,
    sub,
    without_namespaces,
)

CONFIRM_NS = "http://www.confirm.co.uk/schema/am/connector/webservice"
SOAP_ACTION = f"{CONFIRM_NS}/ProcessOperations"

__all__ = ["CONFIRM_NS", "CONTENT_TYPE", "SOAP_ACTION", "SOAP_NS", "MalformedXml", "OperationResult", "RequestFault",
           "UnsafeXml", "operation_results", "parse_xml", "request_envelope", "response_envelope", "soap_fault",
           "sub"]


@dataclass(frozen=True)
class OperationResult:
    """One operation's answer: its response element, or the reason Confirm gave for refusing it."""

    element: etree._Element | None
    fault: str | None = None


def request_envelope(username: str, password: str, database_id: str, operations: list[etree._Element]) -> bytes:
    content = etree.Element(f"{{{CONFIRM_NS}}}ProcessOperationsRequest")
    request = sub(content, "Request")
    authentication = sub(request, "Authentication")
    sub(authentication, "Username", username)
    sub(authentication, "Password", password)
    sub(authentication, "DatabaseId", database_id)
    for operation in operations:
        sub(request, "Operation").append(operation)
    return envelope(content, {"web": CONFIRM_NS})


def response_envelope(response: etree._Element, *, namespaced: bool = False) -> bytes:
    """Wrap a ``Response`` element as Confirm answers (used by the simulator): by default with only the wrapper in
    Confirm's namespace; ``namespaced`` as a SOAP service with a default namespace answers, ``Response`` and
    everything under it in Confirm's namespace."""
    if namespaced:
        result = etree.Element(f"{{{CONFIRM_NS}}}ProcessOperationsResponse", nsmap={None: CONFIRM_NS})
        result.append(in_namespace(response, CONFIRM_NS))
        return envelope(result)
    result = etree.Element(f"{{{CONFIRM_NS}}}ProcessOperationsResult")
    result.append(response)
    return envelope(result, {"web": CONFIRM_NS})


class RequestFault(Exception):
    """Confirm refused the whole request (``Response`` > ``Fault`` > ``Reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def operation_results(root: etree._Element) -> list[OperationResult]:
    """Each ``OperationResponse`` of a parsed answer, in order, read without namespaces; raises RequestFault if the
    request as a whole was refused. (SOAP faults are raised before this, by the shared SOAP client.)"""
    content = without_namespaces(body_content(root))
    response = content if local_name(content) == "Response" else next(content.iter("Response"), None)
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
