"""The Uniform simulator as the demo's stand-in for Uniform: an officer investigates each new service request,
then closes it as resolved, a step every ten seconds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from adapters.common.soap_server import Profile
from adapters.uniform.simulator import UniformSimulator
from broker.sdk import Sandbox

#: How the demo's officer moves a request on: from status, to status and closing action, in words.
STEPS = {"1_REC": ("4_INV", None, "visiting"), "4_INV": ("8_CLO", "RESFIX", "closed it: resolved")}
#: The running number of a reference value such as 26/00034/SR.
_NUMBER = re.compile(r"\d+/(\d+)/[A-Z]+")


class UniformSandbox(Sandbox):
    title: ClassVar[str] = "Uniform simulator"
    default_port: ClassVar[int] = 8027

    def __init__(self, profile: Profile = "lenient") -> None:
        self.profile: Profile = profile
        self.simulator: UniformSimulator | None = None

    def start(self, host: str, port: int) -> None:
        self.simulator = UniformSimulator(host=host, port=port, profile=self.profile)

    @property
    def url(self) -> str:
        assert self.simulator is not None, "start it first"
        return self.simulator.url

    def environment(self) -> dict[str, str]:
        return {"CASEBRIDGE_UNIFORM_URL": self.url, "CASEBRIDGE_UNIFORM_PASSWORD": "secret"}

    def continue_after(self, references: Sequence[str]) -> None:
        assert self.simulator is not None
        numbers = [int(found.group(1)) for reference in references if (found := _NUMBER.fullmatch(reference))]
        self.simulator.number_after(max(numbers, default=0))

    def records_for(self, our_reference: str) -> list[str]:
        """The service requests carrying our reference as an alternative reference."""
        assert self.simulator is not None
        return sorted(reference for reference, request in self.simulator.requests.items()
                      if any(value == our_reference for _type, value in request.alternative_references))

    def officer_moves(self) -> list[str]:
        assert self.simulator is not None
        moved = []
        for reference, request in list(self.simulator.requests.items()):
            if request.status in STEPS:
                status, closing_action, words = STEPS[request.status]
                self.simulator.officer_sets_status(reference, status, closing_action)
                moved.append(f"Uniform officer {words}: request {reference} is {status}"
                             + (f" / {closing_action}" if closing_action else ""))
        return moved

    def close(self) -> None:
        if self.simulator is not None:
            self.simulator.close()
