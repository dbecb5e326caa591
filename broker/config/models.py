"""The shapes of the declarative files in ``mappings/``."""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from broker.model.case import ServiceCode
from broker.model.events import EventType, SystemName

TargetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
ServicePattern = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.*]+$")]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Service(_File):
    name: str
    description: str | None = None


class ServiceCatalogue(_File):
    """``mappings/services.yaml``: the council's canonical services. Cases for other codes are refused."""

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
