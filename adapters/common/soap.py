"""SOAP 1.1 documents built and read with lxml, safely.

Every answer from the network goes through :func:`parse_xml`: a document with a DTD or entity declarations
(XXE, billion laughs) is refused before it is parsed, entities are never resolved, nothing is fetched from the
network, and huge trees are refused.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from lxml import etree

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
#: SOAP 1.1's content type; SOAP 1.2's ``application/soap+xml`` is refused by the servers we speak to.
CONTENT_TYPE = "text/xml; charset=utf-8"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_blank_text=True)


class UnsafeXml(ValueError):
    """A document carrying a DTD or entity declarations (XXE, billion laughs): refused unread."""


class MalformedXml(ValueError):
    """Not XML, or not the SOAP shape expected."""


class SoapFault(Exception):
    """The server answered with a SOAP ``Fault``; ``reason`` is its ``faultstring``."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


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


#: Characters XML 1.0 cannot carry at all (control characters other than tab, newline and carriage return).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: str) -> str:
    """Text as an XML document can carry it: characters XML cannot hold are dropped (markup characters are
    escaped by lxml, so text never becomes markup)."""
    return _NOT_XML.sub("", text)


def sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = xml_text(text)
    return element


def envelope(content: etree._Element, nsmap: dict[str, str] | None = None) -> bytes:
    """A SOAP 1.1 envelope whose body holds ``content``."""
    root = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS, **(nsmap or {})})
    sub(root, f"{{{SOAP_NS}}}Body").append(content)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def soap_fault(message: str, code: str = "soap:Server") -> bytes:
    root = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS})
    fault = sub(sub(root, f"{{{SOAP_NS}}}Body"), f"{{{SOAP_NS}}}Fault")
    sub(fault, "faultcode", code)
    sub(fault, "faultstring", message)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def raise_for_fault(root: etree._Element) -> None:
    """Raise SoapFault if the document is a SOAP fault."""
    fault = root.find(f".//{{{SOAP_NS}}}Fault")
    if fault is not None:
        raise SoapFault((fault.findtext("faultstring") or "").strip() or "SOAP fault",
                        (fault.findtext("faultcode") or "").strip())


def body_content(root: etree._Element) -> etree._Element:
    """The first element inside the envelope's ``Body``."""
    body = root.find(f"{{{SOAP_NS}}}Body")
    content = next(iter(body), None) if body is not None else None
    if content is None:
        raise MalformedXml("no SOAP Body content in the document")
    return content


def local_name(element: etree._Element) -> str:
    return etree.QName(element).localname


def tag_name(element: etree._Element) -> str:
    """An element's tag as text; empty for a comment or processing instruction, whose tag is not a name."""
    tag = element.tag
    return tag if isinstance(tag, str) else ""


def without_namespaces(element: etree._Element) -> etree._Element:
    """A copy with every element's namespace dropped, so answers read the same whichever prefixes a server
    version uses."""
    copy = etree.fromstring(etree.tostring(element), _PARSER)
    for node in copy.iter():
        if isinstance(node.tag, str):
            node.tag = etree.QName(node).localname
    etree.cleanup_namespaces(copy)
    return copy


def in_namespace(element: etree._Element, namespace: str) -> etree._Element:
    """Put an element built without namespaces, and everything under it, into ``namespace`` (as a server with a
    default namespace answers); elements already namespaced are left as they are."""
    for node in element.iter():
        if isinstance(node.tag, str) and not node.tag.startswith("{"):
            node.tag = f"{{{namespace}}}{node.tag}"
    return element


def first_text(element: etree._Element | None, *paths: str) -> str | None:
    """The stripped text of the first of ``paths`` (alternative spellings of one element) that has any, or None.
    Paths are read on a document without namespaces (see :func:`without_namespaces`)."""
    if element is None:
        return None
    for path in paths:
        for found in element.iterfind(path):
            text = (found.text or "").strip()
            if text:
                return text
    return None


def lob_time(text: str, zone: tzinfo) -> datetime:
    """A time as a LOB system writes it, with or without fractional seconds (any number of digits) and with or
    without a zone offset (``Z``, ``+01:00``, ``+0100``); a time without an offset is wall-clock time in ``zone``.
    Raises ValueError for text that is not a date and time."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
