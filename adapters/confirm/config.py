"""Settings of a Confirm target (``settings:`` in routes.yaml) and its mapping file (``mappings/confirm.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class ConfirmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="The connector web service endpoint.")
    username: str = Field(min_length=1)
    password_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$",
                              description="Environment variable holding the password (never the password itself).")
    database_id: str = Field(min_length=1, description="Confirm's DatabaseId.")
    reference_element: Literal["ExternalSystemReference", "EnquiryReference"] = Field(
        "ExternalSystemReference", description="Where our reference goes, so an enquiry can be found again.",
    )
    external_system_number: str = Field("CASEBRIDGE", description="ExternalSystemNumber sent with our reference.")
    timeout_seconds: float = Field(120.0, gt=0, le=900, description="Create and update calls (Confirm is slow).")
    lookup_timeout_seconds: float = Field(300.0, gt=0, le=900, description="GetEnquiry and lookups calls.")
    time_zone: str = Field("Europe/London", description="Confirm ignores offsets: times are sent as local time.")
    max_response_bytes: int = Field(
        10 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024,
        description="Largest answer read, on the wire and decompressed; a larger one fails as response_too_large.",
    )
    search_margin_minutes: float = Field(
        15.0, ge=0, le=24 * 60,
        description="Looking for an enquiry an earlier attempt may have made, the enquiries logged from this long "
                    "before the attempt (or the case's time, if earlier) to this long after now are read: clocks "
                    "differ.",
    )
    publish_notes: bool = Field(
        False, description="Pass status-log notes back with status changes (they may be internal to officers).",
    )


class ServiceSubject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str = Field(min_length=1, description="Confirm ServiceCode.")
    subject: str = Field(min_length=1, description="Confirm SubjectCode.")


class AttributeMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, description="EnqAttribTypeCode.")
    type: Literal["string", "code", "date"] = Field(
        "string", description="string -> EnqAttribStringValue, code -> EnqAttribValueCode, date -> EnqAttribDateValue",
    )
    values: dict[str, str] = Field(default_factory=dict, description="For code attributes: our value -> Confirm code.")


class ConfirmMapping(BaseModel):
    """Canonical codes to Confirm's, and Confirm's statuses back to canonical ones."""

    model_config = ConfigDict(extra="forbid")

    services: dict[str, ServiceSubject] = Field(description="Canonical service code -> Confirm service and subject.")
    attributes: dict[str, AttributeMapping] = Field(default_factory=dict)
    status_codes: dict[str, str] = Field(
        default_factory=dict, description="Canonical status -> EnquiryStatusCode sent with updates.",
    )
    statuses: dict[str, str] = Field(
        default_factory=dict, description="Confirm EnquiryStatusCode -> canonical status, for changes coming back.",
    )
    enquiry_methods: dict[str, str] = Field(default_factory=dict, description="Channel -> EnquiryMethodCode.")
    customer_type: str | None = Field(None, description="CustomerTypeCode for residents.")
    point_of_contact: str | None = Field(None, description="PointOfContactCode for cases from Casebridge.")
