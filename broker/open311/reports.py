"""``POST requests``: an Open311 report as a canonical ``case.created``, checked parameter by parameter.

A report is identified by its ``attribute[fixmystreet_id]`` (FixMyStreet's own number for it) or, lacking one, by
a digest of everything it says: that is its case id (the sender's reference), and its event id is derived from
the sending system and that case id. FixMyStreet sends a report again when an answer did not reach it (after 5
minutes, then every 30): the same report then finds its case and gets the same ``service_request_id``, even when a
field FixMyStreet computes afresh (the nearest address) came out differently the second time.
"""

from __future__ import annotations

import hashlib
import json
import math
import mimetypes
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from broker.config.models import AttributeDatatype, ServiceAttribute, ServiceCatalogue
from broker.model.case import Person, case_id_from_reference
from broker.model.events import CaseCreated
from broker.open311.catalogue import attributes_of
from broker.open311.errors import bad, not_found
from broker.open311.wire import parse_w3c

#: Namespace of the event ids of reports and residents' updates taken in over Open311.
EVENT_NAMESPACE = uuid.UUID("0b5e3a6e-8d0f-4c55-b1f2-7a6c9e311a02")

#: The attribute FixMyStreet fills with its own number for the report: accepted for any service, as it is what
#: makes a report sent again recognisable.
REPORT_NUMBER = "fixmystreet_id"

#: Longest text of any one parameter (the canonical description's limit; the spec's own is 4,000).
LONGEST_TEXT = 20_000
MOST_MEDIA = 50

_ATTRIBUTE_KEY = re.compile(r"^attribute\[([^\[\]]*)\](\[\])?$")
_WHOLE = re.compile(r"^[+-]?\d+$")
_UPRN = re.compile(r"^\d{1,12}$")


@dataclass(frozen=True)
class ReportForm:
    """The parameters of ``POST requests``, each None when absent or empty (the spec's "optional")."""

    service_code: str | None = None
    lat: str | None = None
    long: str | None = None
    address_string: str | None = None
    address_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    description: str | None = None
    media_urls: list[str] = field(default_factory=list)
    #: Every (name, value) of the form, as sent: attributes are read from it, and a report without a number is
    #: identified by it.
    items: list[tuple[str, str]] = field(default_factory=list)


def given(value: str | None) -> str | None:
    """The spec's optional: an empty parameter is an absent one."""
    return value.strip() or None if value is not None else None


def event_id_for(system: str, kind: str, reference: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_NAMESPACE, f"{system}:{kind}:{reference}")


def report_event(catalogue: ServiceCatalogue, system: str, form: ReportForm, now: datetime) -> CaseCreated:
    """The report as a ``case.created`` from ``system``; Open311Error (404 unknown service, else 400 naming every
    parameter at fault) when it cannot be one."""
    code = form.service_code
    if code is None:
        raise bad([("service_code", "required: one of the codes GET services.xml lists")])
    if code not in catalogue.services:
        raise not_found("service_code", f"no service {code[:100]!r} here; GET services.xml lists them")
    problems: list[tuple[str, str]] = []
    attributes = _attributes(attributes_of(catalogue, code), form.items, problems)
    location = _location(form, attributes, problems)
    description = form.description
    if description is None:
        problems.append(("description", "required: what the resident reported"))
    elif len(description) > LONGEST_TEXT:
        problems.append(("description", f"longer than {LONGEST_TEXT:,} characters"))
    attachments = _attachments(form.media_urls, problems)
    case_id = _case_id(attributes.get(REPORT_NUMBER), form.items, problems)
    person = _person(form, problems)
    if problems:
        raise bad(problems)
    payload: dict[str, Any] = {
        "event_id": event_id_for(system, "report", case_id), "occurred_at": now, "source": system,
        "case": {
            "case_id": case_id, "service_code": code, "channel": "web", "description": description,
            "location": location, "attributes": attributes, "attachments": attachments,
            "reporter": {"kind": "person", "person": person} if person else {"kind": "anonymous"},
            # FixMyStreet tells its residents of progress itself: nothing else should write to them as well.
            "wants_updates": False,
        },
    }
    try:
        return CaseCreated.model_validate(payload)
    except ValidationError as exc:
        raise bad(_named(exc)) from None


def _attributes(declared: list[ServiceAttribute], items: list[tuple[str, str]],
                problems: list[tuple[str, str]]) -> dict[str, Any]:
    sent: dict[str, list[str]] = {}
    for name, value in items:
        if not name.startswith("attribute["):
            continue
        matched = _ATTRIBUTE_KEY.match(name)
        if matched is None or not matched.group(1):
            problems.append((name[:100], "not an attribute: send attribute[code]=value or attribute[code][]=value"))
            continue
        sent.setdefault(matched.group(1), []).append(value.strip())
    by_code = {attribute.code: attribute for attribute in declared}
    for code in sent:
        if code not in by_code and code != REPORT_NUMBER:
            asked = ", ".join(sorted(by_code)) or "none"
            problems.append((f"attribute[{code[:64]}]", f"this service asks no such question (its attributes: "
                                                         f"{asked})"))
    values: dict[str, Any] = {}
    for code, texts in sent.items():
        attribute = by_code.get(code)
        if attribute is None and code != REPORT_NUMBER:
            continue
        texts = [text for text in texts if text]
        if not texts:
            continue
        value = _attribute_value(attribute, texts, f"attribute[{code}]", problems)
        if value is not None:
            values[code] = value
    answered = {code for code, texts in sent.items() if any(texts)}
    problems += [(f"attribute[{attribute.code}]", f"required: {attribute.description}")
                 for attribute in declared if attribute.required and attribute.code not in answered]
    return values


def _attribute_value(attribute: ServiceAttribute | None, texts: list[str], parameter: str,
                     problems: list[tuple[str, str]]) -> Any:
    datatype = attribute.datatype if attribute is not None else AttributeDatatype.string
    if any(len(text) > LONGEST_TEXT for text in texts):
        problems.append((parameter, f"longer than {LONGEST_TEXT:,} characters"))
        return None
    if datatype is AttributeDatatype.multivaluelist:
        assert attribute is not None
        chosen = [part.strip() for text in texts for part in text.split(",") if part.strip()]
        wrong = [part for part in chosen if part not in attribute.values]
        if wrong:
            problems.append((parameter, f"not among its values ({', '.join(attribute.values)})"))
            return None
        return list(dict.fromkeys(chosen))
    if len(texts) > 1:
        problems.append((parameter, "given more than once; only a multivaluelist takes several values"))
        return None
    [text] = texts
    if datatype is AttributeDatatype.singlevaluelist:
        assert attribute is not None
        if text not in attribute.values:
            problems.append((parameter, f"not among its values ({', '.join(attribute.values)})"))
            return None
        return text
    if datatype is AttributeDatatype.number:
        return _number(text, parameter, problems)
    if datatype is AttributeDatatype.datetime:
        try:
            parse_w3c(text) if "T" in text else datetime.fromisoformat(text)
        except ValueError:
            problems.append((parameter, "must be an ISO 8601 date, or a datetime with its zone"))
            return None
    return text


def _number(text: str, parameter: str, problems: list[tuple[str, str]]) -> int | float | None:
    try:
        number = float(text)
    except ValueError:
        problems.append((parameter, "must be a number"))
        return None
    if not math.isfinite(number):
        problems.append((parameter, "must be a finite number"))
        return None
    return int(text) if _WHOLE.match(text) and abs(int(text)) < 2**53 else number


def _location(form: ReportForm, attributes: dict[str, Any], problems: list[tuple[str, str]]) -> dict[str, Any]:
    location: dict[str, Any] = {}
    if (form.lat is None) != (form.long is None):
        problems.append(("long" if form.long is None else "lat", "lat and long must be given together"))
    elif form.lat is not None and form.long is not None:
        for parameter, text, key, limit in (("lat", form.lat, "lat", 90), ("long", form.long, "lon", 180)):
            try:
                number = float(text)
            except ValueError:
                problems.append((parameter, "must be a number (WGS84 degrees)"))
                continue
            if not -limit <= number <= limit:
                problems.append((parameter, f"must be between -{limit} and {limit} (WGS84 degrees)"))
                continue
            location[key] = number
    if form.address_string is not None:
        if len(form.address_string) > 500:
            problems.append(("address_string", "longer than 500 characters"))
        else:
            location["address"] = form.address_string
    address_id = form.address_id
    if address_id is not None:
        if len(address_id) > 100:
            problems.append(("address_id", "longer than 100 characters"))
        else:
            attributes["address_id"] = address_id
            if _UPRN.match(address_id):
                location["uprn"] = address_id
            elif not location:
                location["address"] = address_id  # all the report says of where it is
    if form.lat is None and form.address_string is None and address_id is None:
        problems.append(("lat", "say where the problem is: lat and long, address_string or address_id"))
    uprn = attributes.get("uprn")
    if isinstance(uprn, str | int) and _UPRN.match(str(uprn)) and "uprn" not in location:
        location["uprn"] = str(uprn)
    easting, northing = attributes.get("easting"), attributes.get("northing")
    if isinstance(easting, int | float) and isinstance(northing, int | float):
        if 0 <= easting <= 700_000 and 0 <= northing <= 1_300_000:
            location["easting"], location["northing"] = float(easting), float(northing)
        else:
            problems.append(("attribute[easting]", "easting and northing are not in Great Britain's grid"))
    closest = attributes.get("closest_address")
    if isinstance(closest, str) and len(closest) <= 500:
        location["description"] = closest
    return location


def _attachments(urls: list[str], problems: list[tuple[str, str]]) -> list[dict[str, str]]:
    urls = [url.strip() for url in urls if url.strip()]
    if len(urls) > MOST_MEDIA:
        problems.append(("media_url", f"more than {MOST_MEDIA} given"))
        return []
    attachments = []
    for number, url in enumerate(urls, 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2000:
            problems.append(("media_url", "must be an http or https URL"))
            continue
        name = PurePosixPath(parts.path).name or f"media-{number}"
        content_type = mimetypes.guess_type(parts.path)[0] or "application/octet-stream"
        attachments.append({"url": url, "name": name[:255], "content_type": content_type})
    return attachments


def _case_id(number: Any, items: list[tuple[str, str]], problems: list[tuple[str, str]]) -> str:
    """The report's reference: FixMyStreet's number for it, or a digest of all it says."""
    if number is not None:
        case_id = case_id_from_reference(str(number))
        if len(case_id) > 100:
            problems.append((f"attribute[{REPORT_NUMBER}]", "longer than 100 characters"))
        return case_id
    said = sorted((name, value) for name, value in items if name != "api_key")
    return "o311-" + hashlib.sha256(json.dumps(said, ensure_ascii=False).encode()).hexdigest()[:32]


def _person(form: ReportForm, problems: list[tuple[str, str]]) -> dict[str, Any]:
    """Who reported it, checked as the canonical model checks a person (each field named by its parameter)."""
    person = {key: value for key, value in (
        ("name", _name(form.first_name, form.last_name)), ("email", form.email), ("phone", form.phone)) if value}
    if person:
        try:
            Person.model_validate(person)
        except ValidationError as exc:
            parameters = {"name": "first_name", "email": "email", "phone": "phone"}
            problems += [(parameters.get(str(error["loc"][0]) if error["loc"] else "", "email"),
                          error["msg"].removeprefix("Value error, "))
                         for error in exc.errors(include_url=False, include_input=False)]
    return person


def _name(first: str | None, last: str | None) -> str | None:
    """FixMyStreet splits a name in two and sends ``-`` for a part it lacks."""
    return " ".join(part for part in (first, last) if part and part != "-") or None


#: A field of the canonical case, by its path, and the Open311 parameter it came from.
_PARAMETERS: list[tuple[tuple[str, ...], str]] = [
    (("case", "description"), "description"),
    (("case", "location", "lat"), "lat"), (("case", "location", "lon"), "long"),
    (("case", "location", "address"), "address_string"), (("case", "location", "uprn"), "address_id"),
    (("case", "location", "easting"), "attribute[easting]"), (("case", "location", "northing"), "attribute[northing]"),
    (("case", "location", "description"), "attribute[closest_address]"), (("case", "location"), "lat"),
    (("case", "reporter", "person", "person", "email"), "email"),
    (("case", "reporter", "person", "person", "phone"), "phone"),
    (("case", "reporter", "person", "person", "name"), "first_name"),
    (("case", "reporter"), "email"), (("case", "attachments"), "media_url"),
    (("case", "case_id"), f"attribute[{REPORT_NUMBER}]"),
]


def _named(error: ValidationError) -> list[tuple[str, str]]:
    """The canonical model's refusals, each named by the parameter that carried the field, never its value."""
    named = []
    for item in error.errors(include_url=False, include_input=False):
        loc = tuple(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if loc[:2] == ("case", "attributes") and len(loc) > 2:
            named.append((f"attribute[{loc[2]}]", message))
            continue
        parameter = next((name for path, name in _PARAMETERS if loc[:len(path)] == path), "(form)")
        named.append((parameter, message))
    return named
