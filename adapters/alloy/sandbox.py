"""The Alloy simulator as the demo's stand-in for Alloy: an officer schedules an inspection for each new request,
starts the works, and completes them, a step every ten seconds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from adapters.alloy.simulator import STATUS, STATUSES, AlloySimulator
from broker.sdk import Sandbox

_ORDER = list(STATUSES)
#: How the demo's officer moves a request on: status item -> the next one.
STEPS = {_ORDER[0]: _ORDER[1], _ORDER[1]: _ORDER[2], _ORDER[2]: _ORDER[3]}


class AlloySandbox(Sandbox):
    title: ClassVar[str] = "Alloy simulator"
    default_port: ClassVar[int] = 8028

    def __init__(self) -> None:
        self.simulator: AlloySimulator | None = None

    def start(self, host: str, port: int) -> None:
        self.simulator = AlloySimulator(host=host, port=port)

    @property
    def url(self) -> str:
        assert self.simulator is not None, "start it first"
        return self.simulator.url

    def environment(self) -> dict[str, str]:
        return {"CASEBRIDGE_ALLOY_URL": self.url, "CASEBRIDGE_ALLOY_API_KEY": self.simulator.api_key
                if self.simulator else "demo-key"}

    def continue_after(self, references: Sequence[str]) -> None:
        assert self.simulator is not None
        numbers = [int(reference, 16) - 0x6300000000000000000000 for reference in references
                   if len(reference) == 24 and all(c in "0123456789abcdef" for c in reference)]
        self.simulator.number_after(max([number for number in numbers if number > 0], default=0))

    def records_for(self, our_reference: str) -> list[str]:
        assert self.simulator is not None
        return self.simulator.records_for(our_reference)

    def officer_moves(self) -> list[str]:
        assert self.simulator is not None
        moved = []
        for item_id, item in list(self.simulator.items.items()):
            current = (item.attributes.get(STATUS) or [None])[0]
            if current in STEPS:
                self.simulator.officer_sets_status(item_id, STEPS[current])
                moved.append(f"Alloy officer moved item {item_id} to {STATUSES[STEPS[current]]}")
        return moved

    def close(self) -> None:
        if self.simulator is not None:
            self.simulator.close()
