"""Deliver canonical events to any HTTP endpoint as signed JSON."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any, ClassVar

from adapters.webhook.config import WebhookConfig, WebhookMapping
from broker.sdk import (
    Adapter,
    Capability,
    CaseCreated,
    CaseUpdated,
    DeliveryOutcome,
    DeliveryRequest,
    HttpClient,
    HttpResponse,
    PermanentDeliveryError,
    TransientDeliveryError,
    raise_for_status,
    redact_url,
)

#: What a webhook target without ``lookup_url`` means for its deliveries, and how to give it a look-up.
WITHOUT_LOOKUP = (
    "target {name!r} is a webhook with no lookup_url: a delivery whose POST may have landed (a timeout, a worker "
    "stopped mid-call, a replay) is POSTed again, so the receiver gets it once only if it honours the "
    "Idempotency-Key header (the event id) and answers a repeat without acting on it again. If it cannot, give it "
    "a look-up, settings.lookup_url: GET <lookup_url>?idempotency_key=<event id> answering 200 with its reference "
    "if it has that event, 404 if not (see docs/adapters/webhook.md)"
)


class WebhookAdapter(Adapter[WebhookConfig, WebhookMapping]):
    """POSTs ``{"event": <canonical envelope>, ...}`` with ``Idempotency-Key: <event_id>``.

    2xx is delivered (a JSON body's ``reference_field`` becomes the external reference); 408, 429 and 5xx,
    timeouts and connection errors are transient; other 4xx are permanent (the receiver rejected the data).
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.create, Capability.update, Capability.lookup}
    )

    def __init__(self, target: str, config: WebhookConfig | dict[str, Any],
                 mapping: WebhookMapping | dict[str, Any] | None = None) -> None:
        super().__init__(target, config, mapping)
        settings = self.config
        self._http = HttpClient(timeout=settings.timeout_seconds, headers=settings.headers,
                                max_response_bytes=settings.max_response_bytes, ca_file=settings.ca_file,
                                client_cert=settings.client_cert_file, client_key=settings.client_key_file)
        self._url = str(settings.url)
        #: The URLs as they may be recorded and shown: no user-info, no secret query values.
        self._shown_url = redact_url(settings.url)
        self._shown_lookup_url = redact_url(settings.lookup_url) if settings.lookup_url else None
        self._secret = os.environ.get(settings.secret_env, "").encode() if settings.secret_env else b""

    @classmethod
    def realtime_warnings(cls, target: str, settings: dict[str, Any]) -> list[str]:
        if settings.get("lookup_url"):
            return []
        return [WITHOUT_LOOKUP.format(name=target)]

    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        body = self._body(request)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": str(request.event.event_id),
            "X-Casebridge-Event": request.event.event_type.value,
            "X-Casebridge-Attempt": str(request.attempt),
        }
        if self.config.secret_env and not self._secret:
            # Fail closed: a receiver expecting signed requests must never get unsigned ones.
            raise PermanentDeliveryError(
                "webhook_secret_missing",
                f"environment variable {self.config.secret_env} (the signing secret) is not set or empty",
            )
        if self._secret:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Casebridge-Signature"] = f"sha256={digest}"
        # The client's failures are already delivery errors that say whether the POST may have landed.
        response = self._http.post(self._url, content=body, headers=headers)
        raise_for_status(response, system=self._shown_url)
        return DeliveryOutcome(external_ref=self._reference(response), detail={"http_status": response.status_code})

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """Ask the receiver whether it already has this event (only with ``lookup_url`` configured)."""
        if self.config.lookup_url is None:
            return None
        try:
            response = self._http.get(str(self.config.lookup_url),
                                      params={"idempotency_key": str(request.event.event_id)})
        except TransientDeliveryError as exc:
            # Nothing is created by a look-up: it can be asked again at once.
            raise TransientDeliveryError(f"lookup_{exc.reason}", exc.message, may_have_landed=False) from exc
        if response.status_code == 404:
            return None
        if response.status_code == 200:
            return DeliveryOutcome(external_ref=self._reference(response), detail={"found_by_lookup": True})
        raise TransientDeliveryError(f"lookup_http_{response.status_code}",
                                     f"HTTP {response.status_code} from {self._shown_lookup_url}")

    def _body(self, request: DeliveryRequest) -> bytes:
        """``{"event": <envelope>, "our_reference": ..., "external_ref": ..., ...}`` as compact JSON.

        The envelope is serialised by pydantic straight to JSON (no dict in between); the few other members by
        the json module, spliced in after it.
        """
        event = request.event
        extra: dict[str, Any] = {"our_reference": request.our_reference, "external_ref": request.external_ref}
        if isinstance(event, CaseCreated | CaseUpdated):
            extra["target_service_code"] = self._service_code(event.case.service_code)
            extra["target_status"] = self.mapping.statuses.get(event.case.status.value, event.case.status.value)
        rest = json.dumps(extra, separators=(",", ":"), ensure_ascii=False)
        return b'{"event":' + event.model_dump_json(exclude_none=True).encode() + b"," + rest[1:].encode()

    def _service_code(self, canonical: str) -> str:
        if not self.mapping.service_codes:
            return canonical
        mapped = self.mapping.service_codes.get(canonical)
        if mapped is not None:
            return mapped
        if self.mapping.unmapped_service == "pass_through":
            return canonical
        raise PermanentDeliveryError(
            "unmapped_service_code",
            f"service code {canonical!r} has no entry in service_codes of target {self.target!r}",
        )

    def _reference(self, response: HttpResponse) -> str | None:
        if not response.content:
            return None
        try:
            body = json.loads(response.content)
        except ValueError:
            return None
        value = body.get(self.config.reference_field) if isinstance(body, dict) else None
        return str(value) if value not in (None, "") else None

    def close(self) -> None:
        self._http.close()

