"""Routing by the shipped mappings/routes.yaml: which targets an event goes to, and never back to its own system."""

from __future__ import annotations

from pathlib import Path

from broker.config.loader import load_configuration
from broker.intake.routing import Router
from broker.model.events import EventType

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def targets(router: Router, service_code: str, event_type: EventType, source: str) -> list[tuple[str, str]]:
    return [(decision.target, decision.mode.value) for decision in router.targets_for(service_code, event_type, source)]


def test_a_status_change_goes_to_every_route_but_never_back_to_the_system_that_reported_it() -> None:
    router = Router(load_configuration(MAPPINGS))
    changed = EventType.status_changed
    for _ in range(2):  # the second time from what the router remembers
        assert targets(router, "highways.pothole", changed, "portal") == [("confirm", "realtime"), ("crm", "realtime")]
        assert targets(router, "highways.pothole", changed, "confirm") == [("crm", "realtime")]
        assert targets(router, "highways.pothole", changed, "crm") == [("confirm", "realtime")]
    assert targets(router, "waste.missed_bin", EventType.created, "crm") == [("waste-contractor", "batch")]
    assert targets(router, "waste.missed_bin", EventType.created, "waste-contractor") == []
    assert targets(router, "waste.missed_bin", EventType.note_added, "crm") == []


def test_a_caller_changing_its_list_does_not_change_the_next_decision() -> None:
    router = Router(load_configuration(MAPPINGS))
    first = router.targets_for("highways.pothole", EventType.created, "portal")
    first.clear()
    assert [decision.target for decision in router.targets_for("highways.pothole", EventType.created,
                                                                "portal")] == ["confirm"]
