"""Deliver canonical events to any HTTP endpoint as signed JSON."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ValidationError

from adapters.common.http_client import HttpClient, Response, ResponseTooLarge
from adapters.webhook.config import WebhookConfig, WebhookMapping
from broker.errors import PermanentDeliveryError, TransientDeliveryError
from broker.logging import redact_url, redact_urls
from broker.model.events import CaseCreated, CaseUpdated, utc_now
from broker.plugins.contract import Adapter, Capability, DeliveryOutcome, DeliveryRequest

_RESPONSE_EXCERPT = 2_000
#: What a webhook target without ``lookup_url`` means for its deliveries, and how to give it a look-up.
WITHOUT_LOOKUP = (
    "target {name!r} is a webhook with no lookup_url: a delivery whose POST may have landed (a timeout, a worker "
    "stopped mid-call, a replay) is POSTed again, so the receiver gets it once only if it honours the "
    "Idempotency-Key header (the event id) and answers a repeat without acting on it again. If it cannot, give it "
    "a look-up, settings.lookup_url: GET <lookup_url>?idempotency_key=<event id> answering 200 with its reference "
    "if it has that event, 404 if not (see docs/adapters/webhook.md)"
)
#: Answers that say the request was not acted on.
_NOT_ACTED_ON = frozenset({408, 429, 503})


class WebhookAdapter(Adapter[WebhookConfig]):
    """POSTs ``{"event": <canonical envelope>, ...}`` with ``Idempotency-Key: <event_id>``.

    2xx is delivered (a JSON body's ``reference_field`` becomes the external reference); 408, 429 and 5xx,
    timeouts and connection errors are transient; other 4xx are permanent (the receiver rejected the data).
    """

    config_model: ClassVar[type[BaseModel]] = WebhookConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.create, Capability.update, Capability.lookup}
    )

    def __init__(self, target: str, config: WebhookConfig, mapping: dict[str, Any]) -> None:
        super().__init__(target, config, mapping)
        self.codes = WebhookMapping.model_validate(mapping)
        self._http = HttpClient(timeout=config.timeout_seconds, headers=config.headers,
                                max_response_bytes=config.max_response_bytes)
        self._url = str(config.url)
        #: The URLs as they may be recorded and shown: no user-info, no secret query values.
        self._shown_url = redact_url(config.url)
        self._shown_lookup_url = redact_url(config.lookup_url) if config.lookup_url else None
        self._secret = os.environ.get(config.secret_env, "").encode() if config.secret_env else b""

    @classmethod
    def mapping_problems(cls, mapping: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        try:
            WebhookMapping.model_validate(mapping)
        except ValidationError as exc:
            return [(tuple(error["loc"]), error["msg"]) for error in exc.errors()]
        return []

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
        try:
            response = self._http.post(self._url, content=body, headers=headers)
        except httpx.ConnectTimeout as exc:  # never connected: nothing was sent
            raise TransientDeliveryError("connection", f"no connection within {self.config.timeout_seconds}s",
                                         may_have_landed=False) from exc
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError("timeout", f"no answer within {self.config.timeout_seconds}s") from exc
        except httpx.ConnectError as exc:
            raise TransientDeliveryError("connection", redact_urls(f"{type(exc).__name__}: {exc}"),
                                         may_have_landed=False) from exc
        except ResponseTooLarge as exc:
            raise TransientDeliveryError("response_too_large",
                                         f"{exc} (max_response_bytes) from {self._shown_url}") from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError("connection", redact_urls(f"{type(exc).__name__}: {exc}")) from exc
        return self._outcome(response)

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """Ask the receiver whether it already has this event (only with ``lookup_url`` configured)."""
        if self.config.lookup_url is None:
            return None
        try:
            response = self._http.get(str(self.config.lookup_url),
                                      params={"idempotency_key": str(request.event.event_id)})
        except ResponseTooLarge as exc:
            raise TransientDeliveryError("response_too_large",
                                         f"{exc} (max_response_bytes) from {self._shown_lookup_url}") from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError("lookup_connection", redact_urls(f"{type(exc).__name__}: {exc}")) from exc
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
            extra["target_status"] = self.codes.statuses.get(event.case.status.value, event.case.status.value)
        rest = json.dumps(extra, separators=(",", ":"), ensure_ascii=False)
        return b'{"event":' + event.model_dump_json(exclude_none=True).encode() + b"," + rest[1:].encode()

    def _service_code(self, canonical: str) -> str:
        if not self.codes.service_codes:
            return canonical
        mapped = self.codes.service_codes.get(canonical)
        if mapped is not None:
            return mapped
        if self.codes.unmapped_service == "pass_through":
            return canonical
        raise PermanentDeliveryError(
            "unmapped_service_code",
            f"service code {canonical!r} has no entry in service_codes of target {self.target!r}",
        )

    def _outcome(self, response: Response) -> DeliveryOutcome:
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryOutcome(external_ref=self._reference(response), detail={"http_status": status})
        excerpt = redact_urls(response.text[:_RESPONSE_EXCERPT])
        message = f"HTTP {status} from {self._shown_url}"
        if status in (408, 429) or status >= 500:
            raise TransientDeliveryError(
                f"http_{status}", message,
                retry_after=_retry_after_seconds(response.header("Retry-After")),
                response_excerpt=excerpt,
                # Refused before any work (not received in time, too many, unavailable); a 500, 502 or 504 may
                # come after the receiver, or the service behind a gateway, acted on the request.
                may_have_landed=status not in _NOT_ACTED_ON,
            )
        raise PermanentDeliveryError(f"http_{status}", message, response_excerpt=excerpt)

    def _reference(self, response: Response) -> str | None:
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


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone at all: HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - utc_now()).total_seconds())
