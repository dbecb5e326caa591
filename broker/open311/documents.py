"""What the Open311 endpoint's OpenAPI document says of its JSON answers (the XML carries the same, element for
element, as docs/open311.md shows): for people reading the document, and for the fuzzer, which checks every JSON
answer against it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ErrorOut(BaseModel):
    code: int
    description: str


class ServiceOut(BaseModel):
    service_code: str
    service_name: str
    description: str | None
    metadata: bool
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str | None
    group: str | None


class ValueOut(BaseModel):
    key: str
    name: str


class AttributeOut(BaseModel):
    variable: bool
    code: str
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool
    datatype_description: str | None
    order: int
    description: str
    automated: Literal["server_set", "hidden_field"] | None = None
    values: list[ValueOut] | None = None


class ServiceDefinitionOut(BaseModel):
    service_code: str
    attributes: list[AttributeOut]


class CreatedOut(BaseModel):
    service_request_id: str


class RequestOut(BaseModel):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str
    service_code: str
    description: str | None
    requested_datetime: str
    updated_datetime: str
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None


class UpdateOut(BaseModel):
    update_id: str
    service_request_id: str
    status: str
    updated_datetime: str
    description: str | None
    media_url: str | None
    external_status_code: str | None
    fixmystreet_id: str | None = None


class PostedUpdateOut(BaseModel):
    update_id: str


class EndpointOut(BaseModel):
    specification: str
    url: str
    changeset: str
    type: Literal["production", "test"]
    formats: list[str]


class DiscoveryOut(BaseModel):
    changeset: str
    contact: str
    key_service: str
    endpoints: list[EndpointOut]


def answers(model: Any) -> dict[int | str, dict[str, Any]]:
    xml = {"text/xml": {"schema": {"type": "string"}}}
    errors = {"model": list[ErrorOut], "content": xml}
    return {200: {"model": model, "content": xml}, 400: errors, 403: errors, 404: errors, 503: errors}
