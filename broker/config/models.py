"""The shapes of the declarative files in ``mappings/``."""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from broker.model.case import ServiceCode
from broker.model.events import EventType, SystemName

TargetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
ServicePattern = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.*]+$")]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttributeDatatype(StrEnum):
    """What a form asks for (Open311 GeoReport v2's datatypes)."""

    string = "string"
    number = "number"
    datetime = "datetime"
    text = "text"
    singlevaluelist = "singlevaluelist"
    multivaluelist = "multivaluelist"


class Automated(StrEnum):
    """An attribute FixMyStreet fills itself rather than asking the resident (open311-adapter's extension)."""

    #: Filled by FixMyStreet's server when it sends the report (its report number, easting and northing, ...).
    server_set = "server_set"
    #: Kept in a hidden field of the form, filled by the page itself (an asset picked on the map, a UPRN).
    hidden_field = "hidden_field"


def _key_text(value: Any) -> Any:
    """A pick-list key written as a bare number in YAML (``123: Ford``) is still a key."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


AttributeCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
ValueKey = Annotated[str, BeforeValidator(_key_text), StringConstraints(min_length=1, max_length=100)]


class ServiceAttribute(_File):
    """One question of a service's form: kept in the case's ``attributes`` under ``code``."""

    code: AttributeCode
    description: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    datatype: AttributeDatatype = AttributeDatatype.string
    required: bool = False
    variable: bool = Field(True, description="False: shown to the resident as information, not asked.")
    datatype_description: str | None = None
    values: dict[ValueKey, str] = Field(default_factory=dict, description="Pick-list key -> what residents read.")
    automated: Automated | None = None

    @model_validator(mode="after")
    def _values_for_lists_only(self) -> ServiceAttribute:
        lists = (AttributeDatatype.singlevaluelist, AttributeDatatype.multivaluelist)
        if self.datatype in lists and not self.values:
            raise ValueError(f"a {self.datatype.value} needs values (key: name)")
        if self.values and self.datatype not in lists:
            raise ValueError("values are only for singlevaluelist and multivaluelist")
        return self


def _unique_codes(attributes: list[ServiceAttribute]) -> list[ServiceAttribute]:
    codes = [attribute.code for attribute in attributes]
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    if duplicates:
        raise ValueError(f"attribute codes must be unique: {', '.join(duplicates)}")
    return attributes


class Service(_File):
    name: str
    description: str | None = None
    group: str | None = Field(None, description="Open311: the heading it is listed under, such as 'Roads'.")
    keywords: list[str] = Field(default_factory=list, description="Open311: words residents may search by.")
    attributes: list[ServiceAttribute] = Field(
        default_factory=list, description="Open311: the questions its form asks, after the shared ones.")

    @field_validator("attributes")
    @classmethod
    def _unique_attributes(cls, attributes: list[ServiceAttribute]) -> list[ServiceAttribute]:
        return _unique_codes(attributes)


class Open311Endpoint(_File):
    """``open311:`` in ``services.yaml``: what the Open311 endpoint says about itself, and the questions every
    service's form carries first (a service may declare one of them again, in the same place, to change it)."""

    jurisdiction_id: str | None = Field(
        None, description="This council's jurisdiction (its web domain); a request naming another one gets 404.")
    contact: str = "Ask the council's integration team."
    key_service: str = "API keys are issued by the council's integration team (broker keys create <system>)."
    changeset: str | None = Field(
        None, description="When the service list last changed (sortable); unset: when this process started.")
    attributes: list[ServiceAttribute] = Field(default_factory=list)

    @field_validator("attributes")
    @classmethod
    def _unique_attributes(cls, attributes: list[ServiceAttribute]) -> list[ServiceAttribute]:
        return _unique_codes(attributes)


class ServiceCatalogue(_File):
    """``mappings/services.yaml``: the council's canonical services. Cases for other codes are refused."""

    open311: Open311Endpoint = Field(default_factory=Open311Endpoint)
    services: dict[ServiceCode, Service]


class DeliveryMode(StrEnum):
    realtime = "realtime"
    batch = "batch"


class RetryPolicy(_File):
    """How a target's transient failures are retried after the quick in-process retries."""

    delays_seconds: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [30.0, 120.0, 600.0, 3600.0, 21600.0], min_length=1,
        description="Wait before each redelivery; the last one repeats until give_up_after_hours.",
    )
    jitter: float = Field(0.2, ge=0, le=1, description="Each wait is varied by up to this fraction, either way.")
    give_up_after_hours: float = Field(72.0, gt=0, description="From the first attempt; then the delivery fails.")


class CircuitPolicy(_File):
    """When to stop calling a target that keeps failing, and how soon to try it again."""

    failures: int = Field(5, ge=1, description="Consecutive transient failures that open the circuit.")
    open_seconds: float = Field(30.0, gt=0, description="Pause before the first probe; doubles while probes fail.")
    max_open_seconds: float = Field(600.0, gt=0, description="Longest pause between probes.")


class UnconfirmedPolicy(StrEnum):
    """What to do when a create may have landed and the target cannot say whether it did."""

    #: Hold the delivery as ``unconfirmed`` for the reconciliation job, then for support staff: never a duplicate.
    reconcile = "reconcile"
    #: Create again: the council accepts an occasional duplicate record in this system rather than a delay.
    recreate = "recreate"


class TargetDefinition(_File):
    adapter: str = Field(description="Adapter plugin name (entry point in group casebridge.adapters).")
    system: SystemName | None = Field(
        None, description="The system behind this target; its own events are never routed back to it."
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="Adapter settings; ${ENV} expanded.")
    mapping: str | None = Field(None, description="Mapping file in mappings/, default <target>.yaml if present.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit: CircuitPolicy = Field(default_factory=CircuitPolicy)
    concurrency: int = Field(
        4, ge=1, le=32,
        description="Deliveries each worker sends to this target at once, for different cases (a case's events "
                    "always go one after another); 1 sends one at a time. While the circuit is not closed, one.",
    )
    on_unconfirmed: UnconfirmedPolicy = Field(
        UnconfirmedPolicy.reconcile,
        description="When a create may have landed and the target cannot tell: reconcile (hold, search, then ask "
                    "support staff) or recreate (send again, accepting a possible duplicate).",
    )


class RouteDelivery(_File):
    target: TargetName
    mode: DeliveryMode = DeliveryMode.realtime


class Route(_File):
    name: str
    services: list[ServicePattern] = Field(min_length=1, description="Service codes; '*' matches one part.")
    events: list[EventType] = Field(default_factory=lambda: list(EventType))
    deliver: list[RouteDelivery] = Field(min_length=1)

    def matches(self, service_code: str, event_type: EventType) -> bool:
        return event_type in self.events and any(
            service_matches(pattern, service_code) for pattern in self.services
        )


def service_matches(pattern: str, service_code: str) -> bool:
    if pattern == "*":
        return True
    pattern_parts, code_parts = pattern.split("."), service_code.split(".")
    return len(pattern_parts) == len(code_parts) and all(
        fnmatch.fnmatchcase(code, part) for part, code in zip(pattern_parts, code_parts, strict=True)
    )


class RoutingTable(_File):
    """``mappings/routes.yaml``: the targets, and which of them receive which services' events."""

    targets: dict[TargetName, TargetDefinition]
    routes: list[Route]

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: list[Route]) -> list[Route]:
        names = [route.name for route in routes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"route names must be unique: {', '.join(duplicates)}")
        return routes
