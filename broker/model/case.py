"""The canonical case: what every CRM sends and every adapter translates.

Strict by design: unknown fields are rejected everywhere except inside ``attributes``, which carries the
service-specific answers a form collected.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

ServiceCode = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=100),
    Field(description="The council's canonical service, dotted: `highways.pothole`, `waste.missed_bin`."),
]

NUL_MESSAGE = "holds a NUL character (\\u0000), which is not text"


def _no_nul(value: str) -> str:
    """JSON lets a sender escape a NUL (``"\\u0000"``), but PostgreSQL's text and JSON columns cannot store one and
    no LOB system wants it: refused here, with the field named, rather than failing in the store."""
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


#: On every free-text field, after its length: ``Annotated[str, StringConstraints(max_length=...), NO_NUL]``.
NO_NUL = AfterValidator(_no_nul)

Reference = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), NO_NUL]

#: What a case id may not hold: it is a segment of the case's URLs (``/v1/cases/<case_id>``), so no ``/``, ``?``,
#: ``#``, ``%`` or ``\\``, and no control characters.
_NOT_IN_A_CASE_ID = re.compile(r"[/?#%\\\x00-\x1f\x7f]")


def _valid_case_id(value: str) -> str:
    if _NOT_IN_A_CASE_ID.search(value):
        raise ValueError("a case id may not contain '/', '?', '#', '%', '\\' or control characters: it is part of "
                         "the case's URL")
    return value


def case_id_from_reference(reference: str) -> str:
    """A LOB system's reference (``12/00034/AB``) as the id of a case raised there: each character a case id may
    not hold, and ``~`` itself, written ``~XX`` (its code in hex), so that every reference gives its own id. The
    reference itself is kept unchanged as the case's external reference."""
    return "".join(f"~{ord(char):02X}" if char == "~" or _NOT_IN_A_CASE_ID.match(char) else char
                   for char in reference)


CaseId = Annotated[
    Reference, AfterValidator(_valid_case_id),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"^[^/?#%\\\x00-\x1f\x7f]+$"}),
]

#: The HTML standard's "valid e-mail address" (what a browser checks in the portal's own form), with Unicode
#: letters allowed and at least one dot in the domain, as a resident's mailbox has.
_EMAIL = re.compile(
    r"[\w.!#$%&'*+/=?^`{|}~-]+@[^\W_](?:[\w-]{0,61}[^\W_])?(?:\.[^\W_](?:[\w-]{0,61}[^\W_])?)+"
)


def _valid_email(value: str) -> str:
    """The address with its domain in lower case; refused unless it is a plausible mailbox.

    A syntax check only, on purpose: the LOB system and the council's mailer own delivery. It replaces
    ``email-validator``, whose full RFC parse cost more than the rest of the envelope's validation together.
    """
    local, _, domain = value.rpartition("@")
    if len(value) > 254 or len(local) > 64 or not _EMAIL.fullmatch(value):
        raise ValueError("value is not a valid email address")
    return f"{local}@{domain.lower()}"


Email = Annotated[
    str, AfterValidator(_valid_email), WithJsonSchema({"type": "string", "format": "email", "maxLength": 254})
]


def _simple_attribute(value: Any) -> Any:
    """An attribute value as a form answers: a string, number, boolean, null or list of strings.

    Strings must be real text: JSON lets a sender escape half a UTF-16 surrogate pair (``"\\ud800"``), which no
    store column or LOB system can hold, and which the typed fields already refuse.
    """
    texts = value if isinstance(value, list) else [value]
    if not (value is None or isinstance(value, str | int | float | bool)
            or (isinstance(value, list) and all(isinstance(item, str) for item in value))):
        raise ValueError("must be a string, number, boolean, null or list of strings")
    if not all(_is_text(item) for item in texts if isinstance(item, str)):
        raise ValueError("holds an unpaired surrogate escape, which is not text")
    if any("\x00" in item for item in texts if isinstance(item, str)):
        raise ValueError(NUL_MESSAGE)
    return value


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


AttributeKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
AttributeValue = Annotated[Any, AfterValidator(_simple_attribute)]


class Strict(BaseModel):
    """Base for canonical parts: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Channel(StrEnum):
    web = "web"
    app = "app"
    phone = "phone"
    face_to_face = "face_to_face"
    email = "email"
    post = "post"
    social = "social"


class CaseStatus(StrEnum):
    """Canonical statuses, aligned with Open311's extended statuses so portals map them one to one."""

    open = "open"
    investigating = "investigating"
    action_scheduled = "action_scheduled"
    in_progress = "in_progress"
    fixed = "fixed"
    duplicate = "duplicate"
    not_councils_responsibility = "not_councils_responsibility"
    no_further_action = "no_further_action"
    internal_referral = "internal_referral"
    closed = "closed"


def _one_of_the_identifiers(*groups: tuple[str, ...]) -> dict[str, Any]:
    """JSON Schema for the rule the validator below enforces, so the published schema says it too."""
    return {
        "anyOf": [
            {"required": list(group), "properties": {name: {"not": {"type": "null"}} for name in group}}
            for group in groups
        ],
        "dependentRequired": {"easting": ["northing"], "northing": ["easting"], "lat": ["lon"], "lon": ["lat"]},
    }


class Location(Strict):
    """Where the problem is: any of these identifiers, at least one."""

    model_config = ConfigDict(
        json_schema_extra=_one_of_the_identifiers(
            ("uprn",), ("usrn",), ("address",), ("postcode",), ("easting", "northing"), ("lat", "lon")
        )
    )

    uprn: Annotated[str, StringConstraints(pattern=r"^\d{1,12}$")] | None = Field(
        None, description="Unique Property Reference Number."
    )
    usrn: Annotated[str, StringConstraints(pattern=r"^\d{1,8}$")] | None = Field(
        None, description="Unique Street Reference Number."
    )
    address: Annotated[str, StringConstraints(min_length=1, max_length=500), NO_NUL] | None = None
    postcode: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z]{1,2}\d[A-Za-z\d]? ?\d[A-Za-z]{2}$", to_upper=True)
    ] | None = None
    easting: Annotated[float, Field(ge=0, le=700_000, strict=True)] | None = Field(
        None, description="British National Grid easting (EPSG:27700), metres."
    )
    northing: Annotated[float, Field(ge=0, le=1_300_000, strict=True)] | None = Field(
        None, description="British National Grid northing (EPSG:27700), metres."
    )
    lat: Annotated[float, Field(ge=-90, le=90, strict=True)] | None = Field(None, description="WGS84 latitude.")
    lon: Annotated[float, Field(ge=-180, le=180, strict=True)] | None = Field(None, description="WGS84 longitude.")
    description: Annotated[str, StringConstraints(max_length=500), NO_NUL] | None = Field(
        None, description="Free text such as 'outside number 12, near the lamp post'."
    )

    @model_validator(mode="after")
    def _needs_one_identifier(self) -> Location:
        if (self.easting is None) != (self.northing is None):
            raise ValueError("easting and northing must be given together")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together")
        if not any((self.uprn, self.usrn, self.address, self.postcode, self.easting is not None,
                    self.lat is not None)):
            raise ValueError("give at least one of uprn, usrn, address, postcode, easting/northing, lat/lon")
        return self


class Person(Strict):
    """Someone's contact details. Personal data: kept in the store, never written to logs."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200), NO_NUL] | None = None
    email: Email | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{6,25}$")] | None = None
    address: Annotated[str, StringConstraints(max_length=500), NO_NUL] | None = None

    @model_validator(mode="after")
    def _needs_something(self) -> Person:
        if not any((self.name, self.email, self.phone)):
            raise ValueError("give at least one of name, email, phone")
        return self


class AnonymousReporter(Strict):
    kind: Literal["anonymous"] = "anonymous"


class IdentifiedReporter(Strict):
    kind: Literal["person"] = "person"
    person: Person


class RepresentativeReporter(Strict):
    """A councillor, MP, carer or agent reporting on a customer's behalf."""

    kind: Literal["representative"] = "representative"
    representative: Person
    role: Annotated[str, StringConstraints(max_length=100), NO_NUL] | None = Field(
        None, description="e.g. councillor, MP, carer, housing officer."
    )
    on_behalf_of: Person


Reporter = Annotated[
    AnonymousReporter | IdentifiedReporter | RepresentativeReporter, Field(discriminator="kind")
]


class Attachment(Strict):
    url: AnyUrl
    name: Annotated[str, StringConstraints(min_length=1, max_length=255), NO_NUL]
    content_type: Annotated[str, StringConstraints(pattern=r"^[\w.+-]+/[\w.+-]+$")] = Field(
        description="MIME type, e.g. image/jpeg."
    )


class Case(Strict):
    """A resident's report, as the sending system knows it."""

    case_id: CaseId = Field(description="The sender's reference, unique per source system; part of the case's URL, "
                            "so no '/', '?', '#', '%', '\\' or control characters.")
    service_code: ServiceCode
    channel: Channel
    description: Annotated[str, StringConstraints(min_length=1, max_length=20_000), NO_NUL]
    location: Location
    reporter: Reporter = Field(default_factory=AnonymousReporter)
    wants_updates: bool = False
    attributes: dict[AttributeKey, AttributeValue] = Field(
        default_factory=dict,
        description="Service-specific answers (free-form keys; values are strings, numbers, booleans or lists).",
    )
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    status: CaseStatus = CaseStatus.open
    external_refs: dict[Reference, Reference] = Field(
        default_factory=dict, description="Target name -> the LOB system's reference for this case."
    )

