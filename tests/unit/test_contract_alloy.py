"""The Alloy adapter against the contract kit and its simulator: written with the SDK and the kit alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from adapters.alloy.adapter import AlloyAdapter
from adapters.alloy.sandbox import AlloySandbox
from adapters.alloy.simulator import CATEGORIES, CATEGORY, DESCRIPTION, NOTES, REFERENCE, STATUS, STATUSES
from broker.sdk import Sandbox
from broker.testing import (
    AdapterContract,
    CoreContract,
    CreateContract,
    Lob,
    LookupContract,
    PollContract,
    RawAnswer,
    UpdateContract,
)

STATUS_IDS = list(STATUSES)
CATEGORY_IDS = list(CATEGORIES)


class Alloy(AdapterContract):
    adapter_class = AlloyAdapter
    adapter_name = "alloy"
    service_code = "waste.missed_bin"
    golden_dir: ClassVar[Path | None] = Path(__file__).parent / "golden" / "alloy"
    golden_headers = ("Content-Type", "Authorization")

    def sandbox(self) -> Sandbox:
        return AlloySandbox()

    def settings(self, lob: Lob) -> dict[str, Any]:
        return {"url": lob.url, "api_key_env": "CASEBRIDGE_ALLOY_API_KEY", "design_code": "designs_customerRequests",
                "reference_attribute": REFERENCE, "description_attribute": DESCRIPTION,
                "status_attribute": STATUS, "notes_attribute": NOTES, "timeout_seconds": lob.timeout_seconds,
                "lookup_timeout_seconds": lob.timeout_seconds * 5}

    def mapping(self) -> dict[str, Any]:
        return {
            "services": {"waste.missed_bin": {"attributes": {CATEGORY: [CATEGORY_IDS[0]]}},
                         "highways.pothole": {"attributes": {CATEGORY: [CATEGORY_IDS[2]]}}},
            "statuses": {STATUS_IDS[0]: "open", STATUS_IDS[1]: "action_scheduled", STATUS_IDS[2]: "in_progress",
                         STATUS_IDS[3]: "fixed", STATUS_IDS[4]: "no_further_action"},
            "status_items": {"in_progress": STATUS_IDS[2], "fixed": STATUS_IDS[3], "closed": STATUS_IDS[4]},
        }

    def refused_answer(self) -> RawAnswer:
        # Alloy refuses with an error document (its fields as open311-adapter reads them).
        return RawAnswer(400, (("Content-Type", "application/json; charset=utf-8"),),
                         b'{"errorCode":400,"errorCodeString":"AttributeRequired",'
                         b'"debugErrorMessage":"attribute attributes_customerRequestsDescription is required"}')


class TestAlloyCore(Alloy, CoreContract): ...


class TestAlloyCreate(Alloy, CreateContract): ...


class TestAlloyLookup(Alloy, LookupContract): ...


class TestAlloyUpdate(Alloy, UpdateContract): ...


class TestAlloyPoll(Alloy, PollContract): ...
