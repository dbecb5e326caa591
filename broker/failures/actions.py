"""What support staff do with failed messages: replay them (as they are, or created anyway), link them to a LOB
record, or discard them. Finding and reading them is :mod:`broker.failures.queries`.

Every replay and discard is recorded in the audit trail with who did it, when and why. A replayed delivery
re-enters the normal path (its pointer is queued again, per-case order still applies); a replayed intake failure
is taken in again as if it had just arrived, and stays in the store with its new reason if it still fails.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from broker.errors import CasebridgeError, IntakeRejected
from broker.failures.causes import normalise_error
from broker.intake.transaction import Intake
from broker.model.events import parse_event, utc_now
from broker.model.validation import validation_summary
from broker.store.database import Store, is_postgres
from broker.store.deliveries import release_next_waiting
from broker.store.references import remember_references
from broker.store.tables import AuditEntry, DeliveryRecord, FailedMessage
from broker.transport.pointer import DeliveryPointer, enqueue_deliveries


class NotReplayable(CasebridgeError):
    """The failed message is not open (already replayed or discarded), or does not exist."""


def replay(store: Store, intake: Intake, failed_id: int, *, actor: str,
           create_anyway: bool = False) -> str:
    """Send a failed message through again; returns what happened in a few words.

    A replayed delivery whose earlier attempt may have landed asks the target first, as every later attempt
    does. ``create_anyway`` is support staff saying that it did not (they looked in the LOB system): the target
    is then not asked, and the audit trail records who decided so.
    """
    with store.read() as session:
        failed = session.get(FailedMessage, failed_id)
        if failed is None or failed.state != "open":
            raise NotReplayable(f"failed message {failed_id} is {failed.state if failed else 'not found'}")
        stage, raw_body = failed.stage, failed.raw_body
    if stage == "intake":
        if create_anyway:
            raise NotReplayable(f"failed message {failed_id} was never delivered: replay it without create anyway")
        return _replay_intake(store, intake, failed_id, raw_body or b"", actor)
    return _replay_delivery(store, failed_id, actor, create_anyway=create_anyway)


def _replay_delivery(store: Store, failed_id: int, actor: str, *, create_anyway: bool) -> str:
    now = utc_now()
    with store.transaction() as session:
        failed = lock_open_failure(session, failed_id)
        delivery = session.get_one(DeliveryRecord, failed.delivery_id)
        if delivery.state != "failed":
            raise NotReplayable(f"delivery {delivery.id} is {delivery.state}, not failed")
        delivery.state, delivery.updated_at = "pending", now
        delivery.next_attempt_at = delivery.first_attempt_at = None
        delivery.deferrals = 0
        if create_anyway:
            delivery.may_have_landed = False
        enqueue_deliveries(session, [DeliveryPointer(delivery.id, delivery.target, delivery.event_id,
                                                     delivery.case_pk)], now)
        _resolve(session, failed, "replayed", actor, None, now)
        detail: dict[str, Any] = {"failed_message": failed.id}
        if create_anyway:
            detail["create_anyway"] = True
        _audit(session, failed, "replayed", actor, detail, now)
    return f"delivery to {delivery.target} queued again" + (" (created anyway, not asked first)"
                                                            if create_anyway else "")


def link_to_record(store: Store, failed_id: int, *, external_ref: str, actor: str) -> str:
    """Support staff found the case in the LOB system: record the delivery as delivered to that record.

    For a create that may have landed and that nobody could confirm (``delivery_unconfirmed``), or any failed
    delivery whose record someone made by hand. The case's later events then go to that record.
    """
    reference = external_ref.strip()
    if not reference or len(reference) > 200:
        raise NotReplayable("give the LOB system's reference for the record (1 to 200 characters)")
    now = utc_now()
    with store.transaction() as session:
        failed = lock_open_failure(session, failed_id)
        if failed.delivery_id is None:
            raise NotReplayable(f"failed message {failed_id} was never delivered: there is no record to link")
        delivery = session.get_one(DeliveryRecord, failed.delivery_id)
        if delivery.state != "failed":
            raise NotReplayable(f"delivery {delivery.id} is {delivery.state}, not failed")
        delivery.state, delivery.external_ref, delivery.delivered_at = "delivered", reference, now
        delivery.updated_at, delivery.next_attempt_at, delivery.last_error = now, None, None
        remember_references(session, {(delivery.case_pk, delivery.target): reference}, now)
        session.flush()
        release_next_waiting(session, delivery.case_pk, delivery.target, now)
        _resolve(session, failed, "linked", actor, f"linked to {reference}", now)
        _audit(session, failed, "linked", actor, {"failed_message": failed.id, "external_ref": reference}, now)
    return f"delivery to {delivery.target} recorded as {reference}"


def _replay_intake(store: Store, intake: Intake, failed_id: int, raw_body: bytes, actor: str) -> str:
    try:
        event = parse_event(raw_body)
        receipt = intake.accept(event, via="replay", actor=actor)
    except (ValidationError, IntakeRejected) as exc:
        reason = "invalid_envelope" if isinstance(exc, ValidationError) else "rejected"
        # A ValidationError's own text quotes each refused value (input_value=...): personal data, never stored.
        text = validation_summary(exc) if isinstance(exc, ValidationError) else f"{exc.field}: {exc.message}"
        now = utc_now()
        with store.transaction() as session:
            session.execute(update(FailedMessage).where(FailedMessage.id == failed_id).values(
                attempts=FailedMessage.attempts + 1, last_failed_at=now, reason=reason, error_text=text[:4000],
                cause=normalise_error(text[:4000]),
            ))
            session.execute(insert(AuditEntry).values(
                event_id=None, step="replay_failed", actor=actor, at=now,
                detail={"failed_message": failed_id, "reason": reason},
            ))
        return f"still refused: {reason}"
    now = utc_now()
    with store.transaction() as session:
        failed = lock_open_failure(session, failed_id)
        failed.case_pk = receipt.case_pk
        _resolve(session, failed, "replayed", actor, None, now)
        _audit(session, failed, "replayed", actor, {"failed_message": failed.id}, now)
    return f"accepted as case {receipt.case_id}" + (" (already recorded)" if receipt.duplicate else "")


def discard(store: Store, failed_id: int, *, actor: str, reason: str) -> None:
    """Give up on a failed message for good, saying why; later events of its case may then go ahead."""
    now = utc_now()
    with store.transaction() as session:
        failed = lock_open_failure(session, failed_id)
        if failed.delivery_id is not None:
            delivery = session.get_one(DeliveryRecord, failed.delivery_id)
            delivery.state, delivery.updated_at = "discarded", now
            session.flush()
            release_next_waiting(session, delivery.case_pk, delivery.target, now)
        _resolve(session, failed, "discarded", actor, reason, now)
        _audit(session, failed, "discarded", actor, {"failed_message": failed.id, "reason": reason}, now)


def lock_open_failure(session: Session, failed_id: int) -> FailedMessage:
    query = select(FailedMessage).where(FailedMessage.id == failed_id)
    if is_postgres(session):
        query = query.with_for_update()
    failed = session.scalar(query)
    if failed is None or failed.state != "open":
        raise NotReplayable(f"failed message {failed_id} is {failed.state if failed else 'not found'}")
    return failed


def _resolve(session: Session, failed: FailedMessage, state: str, actor: str, note: str | None,
             now: datetime) -> None:
    failed.state, failed.resolved_by, failed.resolved_at, failed.resolution_note = state, actor, now, note


def _audit(session: Session, failed: FailedMessage, step: str, actor: str, detail: dict[str, Any],
           now: datetime) -> None:
    session.execute(insert(AuditEntry).values(
        case_pk=failed.case_pk, event_id=failed.event_id, target=failed.target, step=step, actor=actor,
        detail=detail, at=now,
    ))
