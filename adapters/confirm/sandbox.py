"""The Confirm simulator as the demo's stand-in for Confirm: an officer inspects each new enquiry, orders the
works and fills the pothole, a step every ten seconds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from adapters.common.soap_server import Profile
from adapters.confirm.simulator import ConfirmSimulator
from broker.sdk import Sandbox

#: How the demo's officer moves an enquiry on: from status, to status, with the notes.
STEPS = (("1000", "3000", "Inspected: works ordered"), ("3000", "4000", "Pothole filled"))
_NUMBER = re.compile(r"\d+")


class ConfirmSandbox(Sandbox):
    title: ClassVar[str] = "Confirm simulator"
    default_port: ClassVar[int] = 8026

    def __init__(self, profile: Profile = "lenient") -> None:
        self.profile: Profile = profile
        self.simulator: ConfirmSimulator | None = None

    def start(self, host: str, port: int) -> None:
        self.simulator = ConfirmSimulator(host=host, port=port, profile=self.profile)

    @property
    def url(self) -> str:
        assert self.simulator is not None, "start it first"
        return self.simulator.url

    def environment(self) -> dict[str, str]:
        return {"CASEBRIDGE_CONFIRM_URL": self.url, "CASEBRIDGE_CONFIRM_PASSWORD": "secret"}

    def continue_after(self, references: Sequence[str]) -> None:
        assert self.simulator is not None
        self.simulator.number_after(max((int(reference) for reference in references if _NUMBER.fullmatch(reference)),
                                        default=0))

    def records_for(self, our_reference: str) -> list[str]:
        """The enquiries carrying our reference (in either element it may be sent in)."""
        assert self.simulator is not None
        return sorted(number for number, enquiry in self.simulator.enquiries.items()
                      if our_reference in (enquiry.fields.get("ExternalSystemReference"),
                                           enquiry.fields.get("EnquiryReference")))

    def officer_moves(self) -> list[str]:
        assert self.simulator is not None
        moved = []
        for number, enquiry in list(self.simulator.enquiries.items()):
            for before, after, notes in STEPS:
                if enquiry.status == before:
                    self.simulator.officer_sets_status(number, after, notes)
                    moved.append(f"Confirm officer moved enquiry {number} to {after}: {notes}")
                    break
        return moved

    def close(self) -> None:
        if self.simulator is not None:
            self.simulator.close()
