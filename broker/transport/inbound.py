"""AMQP intake: canonical envelopes published to ``casebridge.inbound`` (routing key = event type).

A message that is not JSON, not a valid envelope, or is refused (unknown service, unknown case, a ``source`` its
publishing account may not claim) is recorded in the failed-message store with the reason and acknowledged: never
requeued forever, never silently dropped. If the publisher set ``reply_to``, it is sent the receipt or the error,
unless that names a queue of ours.

Who published a message: RabbitMQ checks a message's ``user_id`` property against the user of the connection that
published it, and refuses a message whose ``user_id`` is another's, so ``user_id`` names the account for certain.
Each account may publish only as the systems it is bound to (``CASEBRIDGE_AMQP_PUBLISHERS``); see
docs/security.md.
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

from broker.errors import IntakeRejected
from broker.intake.transaction import Intake, Submission
from broker.logging import describe_error
from broker.model.events import AnyEvent, parse_event
from broker.model.validation import field_errors
from broker.operations import metrics
from broker.store.failures import record_intake_failure

log = structlog.get_logger("casebridge.intake.amqp")

RefusalReason = Literal["too_large", "invalid_json", "invalid_envelope", "routing_key_mismatch",
                        "publisher_not_allowed", "rejected"]

#: Prefix of the queues of RabbitMQ's direct reply-to, which a reply may always go to.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: In ``publishers``: the account may publish as any system.
ANY_SYSTEM = "*"

#: Why an inbound message can be refused; each is recorded in the failed-message store and sent to ``reply_to``.
REFUSAL_REASONS: dict[RefusalReason, str] = {
    "too_large": "the message is larger than the broker accepts",
    "invalid_json": "the body is not JSON",
    "invalid_envelope": "the body is not a valid canonical envelope (each field at fault is listed)",
    "routing_key_mismatch": "the routing key is not the envelope's event_type",
    "publisher_not_allowed": "the publishing AMQP account (the message's user_id property, which RabbitMQ checks) "
                             "is missing, or may not publish as the envelope's source",
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
        namespace: str = "casebridge",
        publishers: dict[str, list[str]] | None = None,
        own_account: str | None = None,
        bind_publishers: bool = False,
    ) -> None:
        """``bind_publishers``: check each message's ``user_id`` against ``publishers`` (on RabbitMQ; the in-process
        transport has no accounts). ``own_account`` is the broker's own AMQP user, which may publish as any system:
        it can already read and write every queue of the namespace."""
        self.intake = intake
        self.max_body_bytes = max_body_bytes
        self.namespace = namespace
        self.publishers = {user: set(systems) for user, systems in (publishers or {}).items()}
        self.own_account = own_account
        self.bind_publishers = bind_publishers
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
                event = self._parse(_body_of(message), _routing_key_of(message))
                self._check_publisher(message, event)
                parsed.append((message, event))
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
        if refused.reason != "rejected":  # intake counts what it refuses itself
            metrics.EVENTS_REFUSED.labels(_claimed_source(message), refused.reason).inc()
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

    def _check_publisher(self, message: Message, event: AnyEvent) -> None:
        """Refuses an envelope whose ``source`` the publishing account may not claim."""
        if not self.bind_publishers:
            return
        user = message.properties.get("user_id")
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        if not user:
            raise _Refused("publisher_not_allowed", "the message has no user_id property, so the account that "
                           "published it is unknown: set user_id to the publishing account's name",
                           event_id=str(event.event_id), details=[{"field": "user_id", "message": "missing"}])
        allowed = self.systems_of(str(user))
        if ANY_SYSTEM not in allowed and event.source not in allowed:
            raise _Refused(
                "publisher_not_allowed",
                f"AMQP account {user!r} may publish as {', '.join(sorted(allowed))}, not as {event.source!r}",
                event_id=str(event.event_id), details=[{"field": "source", "message": "not this account's system"}],
            )

    def systems_of(self, user: str) -> set[str]:
        """The systems an account may publish as: as configured; else the broker's own account any, and any other
        account only the system of its own name."""
        if user in self.publishers:
            return self.publishers[user]
        return {ANY_SYSTEM} if user == self.own_account else {user}

    def reply_allowed(self, reply_to: str) -> bool:
        """Replies go to RabbitMQ's direct reply-to or to a queue outside our namespace, never into one of ours
        (a delivery queue fed a reply would crash the workers reading it)."""
        if reply_to.startswith(DIRECT_REPLY_TO):
            return True
        return reply_to != self.namespace and not reply_to.startswith(f"{self.namespace}.")

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
        if not self.reply_allowed(str(reply_to)):
            log.warning("intake.reply_refused", reason="reply_to names a queue of this broker",
                        reply_to=str(reply_to)[:200])
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


def _claimed_source(message: Message) -> str:
    """The system a refused message said it came from, for counting; ``unknown`` if it cannot be read."""
    try:
        source = json.loads(_body_of(message)).get("source")
    except (ValueError, AttributeError):
        return "unknown"
    return source if isinstance(source, str) and source.isidentifier() and len(source) <= 64 else "unknown"


def _body_of(message: Message) -> bytes:
    return message.body if isinstance(message.body, bytes) else str(message.body).encode()


def _routing_key_of(message: Message) -> str:
    return str(message.delivery_info.get("routing_key", ""))
