"""Open311's two formats, built from one description of each answer, and its datetimes.

An answer is described as plain values: a list of dicts for the spec's list documents (``services``,
``service_requests``, ...), a dict for the others; a list inside a dict is a wrapped list (``attributes`` holding
``attribute`` elements). XML is built with lxml, with its declaration and no namespace; JSON follows the spec's
Spark mapping of that XML: the root's list is a bare array, an empty element is ``null``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from lxml import etree

XML, JSON = "xml", "json"
MEDIA_TYPES = {XML: "text/xml; charset=utf-8", JSON: "application/json; charset=utf-8"}

#: The element wrapping each item of a list, by the list's own element.
ITEM = {
    "services": "service", "attributes": "attribute", "values": "value", "service_requests": "request",
    "errors": "error", "service_request_updates": "request_update", "endpoints": "endpoint", "formats": "format",
    "groups": "group",
}

#: Characters XML 1.0 cannot carry at all (control characters other than tab, newline and carriage return).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

#: The W3C profile of ISO 8601 the spec requires, with a zone (``Z`` or ``±hh:mm``); a space where the ``+`` was
#: (a query string that sent it unescaped) is read as the ``+``.
_W3C = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|z|[+\- ]\d{2}:?\d{2})$")


def w3c(moment: datetime) -> str:
    """``2026-11-20T09:15:00+00:00``: whole seconds (the fraction dropped), in UTC, with its offset."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_w3c(text: str) -> datetime:
    """A datetime a client sent; ValueError, saying what is expected, unless it is W3C with a zone."""
    found = _W3C.match(text.strip())
    if not found:
        raise ValueError("must be a W3C datetime with its zone, such as 2026-11-20T09:15:00+00:00 or "
                         "2026-11-20T09:15:00Z")
    moment, zone = found.groups()
    zone = "+00:00" if zone in ("Z", "z") else ("+" + zone[1:] if zone[0] == " " else zone)
    if ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        return datetime.fromisoformat(moment + zone)
    except ValueError:
        raise ValueError("is not a real date and time (month, day, hour or offset out of range)") from None


def render(fmt: str, root: str, value: list[Any] | dict[str, Any]) -> bytes:
    return xml_document(root, value) if fmt == XML else json_document(value)


def xml_document(root: str, value: list[Any] | dict[str, Any]) -> bytes:
    element = etree.Element(root)
    _fill(element, root, value)
    return bytes(etree.tostring(element, xml_declaration=True, encoding="UTF-8"))


def json_document(value: list[Any] | dict[str, Any]) -> bytes:
    return json.dumps(_json(value), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _fill(element: etree._Element, name: str, value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _fill(etree.SubElement(element, ITEM[name]), ITEM[name], item)
    elif isinstance(value, dict):
        for key, child in value.items():
            _fill(etree.SubElement(element, key), key, child)
    else:
        element.text = _text(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return w3c(value)
    return _NOT_XML.sub("", str(value))


def _json(value: Any) -> Any:
    if isinstance(value, list):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _json(child) for key, child in value.items()}
    if isinstance(value, datetime):
        return w3c(value)
    if value == "":
        return None
    return value
