"""Uniform's service request connector on the wire: SOAP 1.1, one operation per request, a cookie session.

Session operations (``LogonToConnector``, ``LogoffFromConnector``, ``GetConnectorLoginStatus``,
``GetCnCodeList``) live in the connector's service namespace; service request operations in its message-types
namespace, with the submitted request's fields in the service request types namespace. Answers are read without
their namespaces, so minor version differences in prefixes and namespace versions do not matter.
"""

from __future__ import annotations

import copy

from lxml import etree

from adapters.common.soap import body_content, envelope, sub, tag_name, without_namespaces

_BASE = "http://www.caps-solutions.co.uk"
SERVICE_NS = f"{_BASE}/webservices/connectors/75/servicerequest/service"
MESSAGE_NS = f"{_BASE}/webservices/connectors/731/servicerequest/messagetypes"
TYPES_NS = f"{_BASE}/schema/uniform/731/servicerequest/sr/srtypes"
COMMON_NS = f"{_BASE}/schema/uniform/72b/common/uniformtypes"
SESSION_OPERATIONS = frozenset({"LogonToConnector", "LogoffFromConnector", "GetConnectorLoginStatus",
                                "GetCnCodeList"})
SESSION_COOKIE = "ASP.NET_SessionId"


def soap_action(operation: str) -> str:
    group = "common" if operation in SESSION_OPERATIONS else "servicerequest"
    return f'"{_BASE}/webservices/connectors/{group}/actions/{operation}"'


def request(operation: str, *parts: etree._Element) -> bytes:
    """An operation's request envelope; ``parts`` are its parameters, built without namespaces."""
    namespace = SERVICE_NS if operation in SESSION_OPERATIONS else MESSAGE_NS
    content = etree.Element(f"{{{namespace}}}{operation}", nsmap={"tns": namespace})
    for given in parts:
        part = copy.deepcopy(given)  # a request may be sent twice (after a new logon): leave the caller's intact
        scalar = operation in SESSION_OPERATIONS or part.tag in ("LastUpdated", "ReferenceValue")
        _qualify(part, namespace if scalar else TYPES_NS)  # a submitted request's fields are service request types
        content.append(part)
    return envelope(content, {"tns": namespace, "sr": TYPES_NS, "common": COMMON_NS})


def _qualify(element: etree._Element, namespace: str) -> None:
    """Put an element built without namespaces, and its children, into ``namespace``; alternative references
    belong to the common types namespace."""
    if element.tag == "AlternativeReference":
        namespace = COMMON_NS
    element.tag = f"{{{namespace}}}{tag_name(element)}"
    for child in element:
        _qualify(child, namespace)


def result(root: etree._Element, operation: str) -> etree._Element:
    """``<operation>Result`` of an answer, without namespaces (or the response element if there is none)."""
    content = without_namespaces(body_content(root))
    found = content.find(f"{operation}Result")
    return found if found is not None else content


def response(operation: str, result_element: etree._Element) -> bytes:
    """An answer as the connector gives it (used by the simulator)."""
    namespace = SERVICE_NS if operation in SESSION_OPERATIONS else MESSAGE_NS
    content = etree.Element(f"{{{namespace}}}{operation}Response", nsmap={None: namespace})
    result_element.tag = f"{{{namespace}}}{operation}Result"
    for node in result_element.iter():
        if isinstance(node.tag, str) and not node.tag.startswith("{"):
            node.tag = f"{{{namespace}}}{node.tag}"
    content.append(result_element)
    return envelope(content)


__all__ = ["COMMON_NS", "MESSAGE_NS", "SERVICE_NS", "SESSION_COOKIE", "TYPES_NS", "request", "response", "result",
           "soap_action", "sub"]
