"""AMQP intake: canonical envelopes published to ``casebridge.inbound`` (routing key = event type).

A message that is not JSON, not a valid envelope, or is refused (unknown service, unknown case) is recorded in
the failed-message store with the reason and acknowledged: never requeued forever, never silently dropped. If
the publisher set ``reply_to``, it is sent the receipt or the error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import structlog
from kombu.connection import Connection
from kombu.message import Message
from kombu.messaging import Producer
from pydantic import ValidationError

from broker.api.errors import field_name
from broker.errors import IntakeRejected, clean_message
from broker.intake import Intake, Submission
from broker.logging import describe_error
from broker.model.events import AnyEvent, parse_event
from broker.store.failures import record_intake_failure

log = structlog.get_logger("casebridge.intake.amqp")

RefusalReason = Literal["too_large", "invalid_json", "invalid_envelope", "routing_key_mismatch", "rejected"]

#: Why an inbound message can be refused; each is recorded in the failed-message store and sent to ``reply_to``.
REFUSAL_REASONS: dict[RefusalReason, str] = {
    "too_large": "the message is larger than the broker accepts",
    "invalid_json": "the body is not JSON",
    "invalid_envelope": "the body is not a valid canonical envelope (each field at fault is listed)",
    "routing_key_mismatch": "the routing key is not the envelope's event_type",
    "rejected": "a valid envelope the broker cannot accept: unknown service code, unknown or existing case, "
                "or an event_id reused for a different event",
}


class InboundHandler:
    def __init__(
        self,
        intake: Intake,
        reply_connection: Callable[[], Connection],
        on_accepted: Callable[[], None],
        *,
        max_body_bytes: int = 1_048_576,
    ) -> None:
        self.intake = intake
        self.max_body_bytes = max_body_bytes
        self.reply_connection = reply_connection
        self.on_accepted = on_accepted
        self._reply_producer: Producer | None = None
        self._connection: Connection | None = None

    def __call__(self, message: Message) -> None:
        self.handle_batch([message])

    def handle_batch(self, messages: list[Message]) -> None:
        """Take in a prefetch window: valid envelopes in one intake transaction, the rest to the failed store.

        Raises only if the store cannot record the outcome; the consumer then returns every message to the queue.
        """
        parsed: list[tuple[Message, AnyEvent]] = []
        refusals: list[tuple[Message, _Refused]] = []
        for message in messages:
            try:
                parsed.append((message, self._parse(_body_of(message), _routing_key_of(message))))
            except _Refused as bad:
                refusals.append((message, bad))
        outcomes = self.intake.accept_many(
            [Submission(event, "amqp", f"system:{event.source}", hold_if_unknown=True, raw_body=_body_of(message))
             for message, event in parsed]
        ) if parsed else []
        accepted = False
        for (message, event), outcome in zip(parsed, outcomes, strict=True):
            if isinstance(outcome, IntakeRejected):
                refusals.append((message, _Refused(
                    "rejected", f"{outcome.field}: {outcome.message}", event_id=str(event.event_id),
                    details=[{"field": outcome.field, "message": outcome.message}],
                )))
                continue
            accepted = True
            self._reply(message, {"accepted": True, "duplicate": outcome.duplicate, "case_id": outcome.case_id,
                                  "event_id": outcome.event_id, "held": outcome.held})
        for message, refused in refusals:
            self._refuse(message, refused)
        if accepted:
            self.on_accepted()

    def _refuse(self, message: Message, refused: _Refused) -> None:
        record_intake_failure(
            self.intake.store, reason=refused.reason, error_text=refused.text, raw_body=_body_of(message),
            event_id=refused.event_id, details=refused.details,
        )
        log.warning("intake.refused", via="amqp", reason=refused.reason, routing_key=_routing_key_of(message),
                    event_id=refused.event_id)
        self._reply(message, {"accepted": False, "reason": refused.reason, "error": refused.text,
                              "errors": refused.details})

    def _parse(self, body: bytes, routing_key: str) -> AnyEvent:
        if len(body) > self.max_body_bytes:
            raise _Refused("too_large", f"message of {len(body)} bytes exceeds {self.max_body_bytes}")
        try:
            event = parse_event(body)
        except ValidationError as exc:
            raise self._invalid(body, exc) from exc
        if routing_key != event.event_type.value:
            raise _Refused(
                "routing_key_mismatch",
                f"routing key {routing_key!r} does not match event_type {event.event_type.value!r}",
                event_id=str(event.event_id),
            )
        return event

    @staticmethod
    def _invalid(body: bytes, error: ValidationError) -> _Refused:
        """Why a body that failed validation is refused: not JSON at all, or JSON that is not an envelope."""
        try:
            raw = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _Refused("invalid_json", f"body is not JSON: {exc}")
        event_id = str(raw.get("event_id")) if isinstance(raw, dict) and raw.get("event_id") else None
        details = field_errors(error)
        summary = "; ".join(f"{item['field']}: {item['message']}" for item in details)
        return _Refused("invalid_envelope", summary, event_id=event_id, details=details)

    def _reply(self, message: Message, body: dict[str, Any]) -> None:
        reply_to = message.properties.get("reply_to")
        if not reply_to:
            return
        try:
            if self._reply_producer is None:
                self._connection = self.reply_connection()
                self._reply_producer = Producer(self._connection.channel())
            self._reply_producer.publish(
                body, exchange="", routing_key=reply_to, serializer="json",
                correlation_id=message.properties.get("correlation_id"), retry=False,
            )
        except Exception as exc:  # a reply is a courtesy: the outcome is already recorded
            log.warning("intake.reply_failed", error=describe_error(exc))
            if self._connection is not None:
                self._connection.release()
            self._reply_producer = self._connection = None


class _Refused(Exception):
    def __init__(self, reason: RefusalReason, text: str, *, event_id: str | None = None,
                 details: list[dict[str, str]] | None = None) -> None:
        super().__init__(text)
        self.reason, self.text, self.event_id, self.details = reason, text, event_id, details or []


def _body_of(message: Message) -> bytes:
    return message.body if isinstance(message.body, bytes) else str(message.body).encode()


def _routing_key_of(message: Message) -> str:
    return str(message.delivery_info.get("routing_key", ""))


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "case.location", "message": ...}`` with dotted field names."""
    return [
        {"field": field_name(item["loc"]), "message": clean_message(item["msg"]), "type": item["type"]}
        for item in error.errors(include_url=False)
    ]
