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
        self._decided: dict[tuple[str, EventType, str], tuple[RouteDecision, ...]] = {}

    def targets_for(self, service_code: str, event_type: EventType, source: str) -> list[RouteDecision]:
        """Targets in route order, each once; a target never receives events from its own system."""
        key = (service_code, event_type, source)
        decided = self._decided.get(key)
        if decided is None:  # remembered: the routes never change while a router lives, and few keys occur
            decided = self._decided[key] = tuple(self._decide(service_code, event_type, source))
        return list(decided)

    def _decide(self, service_code: str, event_type: EventType, source: str) -> list[RouteDecision]:
        decisions: dict[str, RouteDecision] = {}
        for route in self._routing.routes:
            if not route.matches(service_code, event_type):
                continue
            for delivery in route.deliver:
                definition = self._routing.targets[delivery.target]
                if definition.system == source or delivery.target in decisions:
                    continue
                decisions[delivery.target] = RouteDecision(delivery.target, delivery.mode, route.name)
        return list(decisions.values())

    def realtime_targets(self) -> set[str]:
        return {
            delivery.target
            for route in self._routing.routes
            for delivery in route.deliver
            if delivery.mode is DeliveryMode.realtime
        }
