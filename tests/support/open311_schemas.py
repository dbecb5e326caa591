"""Schemas of every Open311 answer, written from the GeoReport v2 spec (and FixMyStreet's extension for updates):
XML Schema for the XML (``open311_xsd/``), JSON Schema for the JSON, which the spec derives from the XML by the
Spark convention (a list document is a bare array, an empty element is null).

``check_answer`` is what the tests' Open311 client runs on every answer it gets: a missing field, a wrong type or a
datetime without its offset fails the test that received it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from lxml import etree

from adapters.common.soap import parse_xml

XSD = Path(__file__).parent / "open311_xsd"

#: The documents, by kind: (the XML's root element, its schema file).
KINDS = {
    "discovery": ("discovery", "discovery.xsd"),
    "services": ("services", "services.xsd"),
    "service_definition": ("service_definition", "service_definition.xsd"),
    "created": ("service_requests", "created.xsd"),
    "requests": ("service_requests", "requests.xsd"),
    "updates": ("service_request_updates", "updates.xsd"),
    "posted_update": ("service_request_updates", "posted_update.xsd"),
    "errors": ("errors", "errors.xsd"),
}

W3C = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_TEXT = {"type": ["string", "null"]}
_ID = {"type": "string", "minLength": 1, "pattern": r"^\S(.*\S)?$"}
_WHEN = {"type": "string", "pattern": W3C}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
UPDATE_STATUSES = ["OPEN", "INVESTIGATING", "ACTION_SCHEDULED", "IN_PROGRESS", "FIXED", "DUPLICATE",
                   "NOT_COUNCILS_RESPONSIBILITY", "NO_FURTHER_ACTION", "INTERNAL_REFERRAL", "CLOSED"]


def _record(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})},
            "additionalProperties": False}


def _array(item: dict[str, Any], *, at_least: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": at_least}


JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    "discovery": _record({
        "changeset": _ID, "contact": _ID, "key_service": _ID,
        "endpoints": _array(_record({
            "specification": _ID, "url": _ID, "changeset": _ID, "type": {"enum": ["production", "test"]},
            "formats": _array({"type": "string", "pattern": r"^[a-z]+/[a-z0-9.+-]+$"}, at_least=1),
        }), at_least=1),
    }),
    "services": _array(_record({
        "service_code": _ID, "service_name": _ID, "description": _TEXT, "metadata": {"type": "boolean"},
        "type": {"enum": ["realtime", "batch", "blackbox"]}, "keywords": _TEXT, "group": _TEXT,
    })),
    "service_definition": _record({
        "service_code": _ID,
        "attributes": _array(_record({
            "variable": {"type": "boolean"}, "code": _ID,
            "datatype": {"enum": ["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]},
            "required": {"type": "boolean"}, "datatype_description": _TEXT,
            "order": {"type": "integer", "minimum": 1}, "description": _TEXT,
        }, {"automated": {"enum": ["server_set", "hidden_field"]},
            "values": _array(_record({"key": _ID, "name": _TEXT}), at_least=1)})),
    }),
    "created": _array(_record({"service_request_id": _ID}, {"service_notice": _TEXT, "account_id": _TEXT}),
                      at_least=1),
    "requests": _array(_record({
        "service_request_id": _ID, "status": {"enum": ["open", "closed"]}, "service_name": _TEXT,
        "service_code": _ID, "description": _TEXT, "requested_datetime": _WHEN, "updated_datetime": _WHEN,
        "address": _TEXT, "address_id": _TEXT, "zipcode": _TEXT, "lat": _NUMBER_OR_NULL,
        "long": _NUMBER_OR_NULL, "media_url": _TEXT,
    }, {"status_notes": _TEXT, "agency_responsible": _TEXT, "service_notice": _TEXT, "expected_datetime": _WHEN})),
    "updates": _array(_record({
        "update_id": _ID, "service_request_id": _ID, "status": {"enum": UPDATE_STATUSES},
        "updated_datetime": _WHEN, "description": _TEXT,
    }, {"media_url": _TEXT, "external_status_code": _TEXT,
        "fixmystreet_id": {"type": "string", "pattern": r"^\d+$"}})),
    "posted_update": _array(_record({"update_id": _ID}), at_least=1),
    "errors": _array(_record({"code": {"type": "integer", "minimum": 100, "maximum": 599},
                              "description": _ID}), at_least=1),
}


@cache
def xml_schema(kind: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD / KINDS[kind][1])))


def check_xml(kind: str, body: bytes) -> etree._Element:
    """The document, once it is shown to be the spec's ``kind``: UTF-8 with its declaration, no namespace, valid."""
    assert body.startswith(b"<?xml version='1.0' encoding='UTF-8'?>") or \
        body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'), body[:80]
    root = parse_xml(body)
    assert root.tag == KINDS[kind][0], f"root <{root.tag}>, expected <{KINDS[kind][0]}>"
    assert not root.nsmap and all(element.nsmap == {} for element in root.iter()), "the spec's XML has no namespace"
    schema = xml_schema(kind)
    if not schema.validate(root):
        raise AssertionError(f"not a valid {kind} document: {schema.error_log.last_error}\n{body[:2000]!r}")
    return root


def check_json(kind: str, value: Any) -> Any:
    try:
        jsonschema.validate(value, JSON_SCHEMAS[kind])
    except jsonschema.ValidationError as exc:
        raise AssertionError(f"not a valid {kind} document at {list(exc.absolute_path)}: {exc.message}") from None
    return value


def check_answer(kind: str, fmt: str, status: int, content_type: str, body: bytes) -> None:
    """An answer, whatever its status: errors for 4xx and 5xx, ``kind`` otherwise, in the format asked for."""
    if status >= 400:
        kind = "errors"
    else:
        assert status == 200, status
    expected = "text/xml; charset=utf-8" if fmt == "xml" else "application/json; charset=utf-8"
    assert content_type.lower().replace(" ", "") == expected.replace(" ", ""), content_type
    if fmt == "xml":
        check_xml(kind, body)
    else:
        import json

        check_json(kind, json.loads(body.decode("utf-8")))
