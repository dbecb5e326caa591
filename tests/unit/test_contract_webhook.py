"""The webhook adapter against the contract kit, with the receiver docs/adapters/webhook.md describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.receiver import WebhookReceiver
from broker.sdk import Capability, Sandbox
from broker.testing import AdapterContract, CoreContract, CreateContract, Lob, LookupContract, UpdateContract


class Webhook(AdapterContract):
    adapter_class = WebhookAdapter
    adapter_name = "webhook"
    golden_dir: ClassVar[Path | None] = Path(__file__).parent / "golden" / "webhook"
    golden_headers = ("Content-Type", "Idempotency-Key", "X-Casebridge-Event", "X-Casebridge-Attempt")

    def sandbox(self) -> Sandbox:
        return WebhookReceiver()

    def settings(self, lob: Lob) -> dict[str, Any]:
        return {"url": lob.url, "lookup_url": f"{lob.url}/received", "timeout_seconds": lob.timeout_seconds}

    def mapping(self) -> dict[str, Any]:
        return {"service_codes": {"highways.pothole": "POT"}, "statuses": {"in_progress": "WIP"}}


class TestWebhookCore(Webhook, CoreContract):
    bypass_reasons: ClassVar[dict[Capability | str, str]] = {}


class TestWebhookCreate(Webhook, CreateContract):
    pass


class TestWebhookLookup(Webhook, LookupContract):
    pass


class TestWebhookUpdate(Webhook, UpdateContract):
    pass
