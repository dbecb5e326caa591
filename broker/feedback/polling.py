"""Status changes made in LOB systems, turned into canonical ``case.status_changed`` events for subscribers.

Each polling target keeps a high-water mark in the store. A poll reads from a little before the mark (an
overlap, because LOB systems commit late and clocks differ) up to now, in windows of bounded length so a long
downtime is caught up without one huge request, and remembers every change it has turned into an event, so the
overlap never produces a second one. Events get ids derived from the change, so even a crash between recording
and moving the mark cannot duplicate them.

A target whose poll fails (its system is down, its answer cannot be read) keeps its mark where the last window it
finished left it, so the next poll reads again from there and nothing is passed over; the failure is logged
against that target alone (``lob.poll_failed``) and raised as :class:`PollFailed`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from broker.config.loader import Configuration
from broker.errors import CasebridgeError, IntakeRejected
from broker.intake.transaction import Intake, Submission
from broker.logging import describe_error
from broker.model.events import CaseStatusChanged, utc_now
from broker.plugins.contract import Adapter, Capability, LobStatusChange
from broker.store.database import Store
from broker.store.tables import CaseRecord, ExternalRef, LobUpdate, PollMark

log = structlog.get_logger("casebridge.lob_updates")

#: Namespace of the event ids given to LOB status changes (uuid5 of target and update id).
EVENT_NAMESPACE = uuid.UUID("6f1c1b52-3b8e-4c59-9a43-1f0b2c7d9e10")


@dataclass(frozen=True)
class PollResult:
    target: str
    changes: int = 0
    emitted: int = 0
    already_seen: int = 0
    unknown_cases: int = 0
    polled_until: datetime | None = None


class PollFailed(CasebridgeError):
    """A target's poll stopped at ``reason``; ``result`` is what it had done, its mark stays at ``polled_until``."""

    def __init__(self, result: PollResult, reason: str) -> None:
        self.result = result
        self.reason = reason
        super().__init__(f"{result.target}: {reason}")


def poll_target(store: Store, intake: Intake, configuration: Configuration, target: str, adapter: Adapter[Any],
                *, overlap: timedelta, first_look_back: timedelta, max_window: timedelta) -> PollResult:
    """Read the target's changes since its mark and emit an event for each new one about a case we know."""
    if Capability.poll_updates not in adapter.capabilities:
        raise ValueError(f"target {target!r} cannot report status changes")
    now = utc_now()
    with store.read() as session:
        mark = session.get(PollMark, target)
    start = (mark.polled_until - overlap) if mark else now - first_look_back
    result = PollResult(target, polled_until=mark.polled_until if mark else None)
    source = configuration.targets[target].definition.system or target
    try:
        while start < now:
            end = min(start + max_window, now)
            changes = adapter.status_changes(start, end)
            counts = _emit(store, intake, target, source, changes)
            done = PollResult(target, result.changes + len(changes), result.emitted + counts[0],
                              result.already_seen + counts[1], result.unknown_cases + counts[2], end)
            _move_mark(store, target, end)
            result, start = done, end
    except Exception as exc:
        reason = describe_error(exc)
        log.warning("lob.poll_failed", target=target, error=reason, changes=result.changes, emitted=result.emitted,
                    polled_until=result.polled_until)
        raise PollFailed(result, reason) from exc
    log.info("lob.polled", target=target, changes=result.changes, emitted=result.emitted,
             already_seen=result.already_seen, unknown_cases=result.unknown_cases)
    return result


def _emit(store: Store, intake: Intake, target: str, source: str,
          changes: list[LobStatusChange]) -> tuple[int, int, int]:
    emitted = seen = unknown = 0
    for change in sorted(changes, key=lambda c: c.occurred_at):
        with store.read() as session:
            if session.get(LobUpdate, (target, change.update_id)) is not None:
                seen += 1
                continue
            case = session.execute(
                select(CaseRecord.id, CaseRecord.case_id)
                .join(ExternalRef, ExternalRef.case_pk == CaseRecord.id)
                .where(ExternalRef.target == target, ExternalRef.reference == change.reference)
            ).first()
        if case is None:
            unknown += 1  # an enquiry raised in the LOB system directly, not through Casebridge
            continue
        event_id = uuid.uuid5(EVENT_NAMESPACE, f"{target}:{change.update_id}")
        event = CaseStatusChanged.model_validate({
            "event_id": event_id, "occurred_at": change.occurred_at, "source": source,
            "case": {"case_id": case.case_id},
            "change": {"status": change.status, "reason": change.notes,
                       "external_status_code": change.external_status_code},
        })
        [outcome] = intake.accept_many([Submission(event, "poll", f"target:{target}", case_pk=case.id)])
        refused = isinstance(outcome, IntakeRejected)
        if isinstance(outcome, IntakeRejected):
            log.warning("lob.change_refused", target=target, update_id=change.update_id, error=outcome.message)
        with store.transaction() as session:
            session.merge(LobUpdate(target=target, update_id=change.update_id,
                                    event_id=None if refused else str(event_id), received_at=utc_now()))
        emitted += 0 if refused else 1
    return emitted, seen, unknown


def _move_mark(store: Store, target: str, polled_until: datetime) -> None:
    with store.transaction() as session:
        session.merge(PollMark(target=target, polled_until=polled_until, updated_at=utc_now()))
