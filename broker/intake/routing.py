"""Decide which targets receive an event, from ``mappings/routes.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

from broker.config.loader import Configuration
from broker.config.models import DeliveryMode
from broker.model.events import EventType


@dataclass(frozen=True)
class RouteDecision:
    target: str
    mode: DeliveryMode
    route: str


class Router:
    def __init__(self, configuration: Configuration) -> None:
        self._routing = configuration.routing
        #: Per service code and event type (both bounded: the catalogue's codes, the event types), each target the
        #: routes name, once, with its LOB system. The source is applied afterwards: senders are not a closed set.
        self._matched: dict[tuple[str, EventType], tuple[tuple[RouteDecision, str | None], ...]] = {}

    def targets_for(self, service_code: str, event_type: EventType, source: str) -> list[RouteDecision]:
        """Targets in route order, each once; a target never receives events from its own system."""
        matched = self._matched.get((service_code, event_type))
        if matched is None:  # remembered: the routes never change while a router lives
            matched = self._matched[(service_code, event_type)] = tuple(self._match(service_code, event_type))
        return [decision for decision, system in matched if system != source]

    def _match(self, service_code: str, event_type: EventType) -> list[tuple[RouteDecision, str | None]]:
        decisions: dict[str, tuple[RouteDecision, str | None]] = {}
        for route in self._routing.routes:
            if not route.matches(service_code, event_type):
                continue
            for delivery in route.deliver:
                if delivery.target not in decisions:
                    system = self._routing.targets[delivery.target].system
                    decisions[delivery.target] = (RouteDecision(delivery.target, delivery.mode, route.name), system)
        return list(decisions.values())

    def realtime_targets(self) -> set[str]:
        return {
            delivery.target
            for route in self._routing.routes
            for delivery in route.deliver
            if delivery.mode is DeliveryMode.realtime
        }
