"""Accept events from any channel (HTTP or AMQP): validate, deduplicate, route and record them durably.

Everything happens in one transaction: the event (inbox), the case, the audit steps, a delivery row per target
and an outbox message per real-time delivery. Only after it commits does the sender get a receipt, or is the
AMQP message acknowledged. The AMQP consumer hands over a whole prefetch window at once: one transaction and a
few bulk statements for many events, instead of a dozen statements and a commit for each.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Row, Select, and_, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.config.loader import Configuration
from broker.config.models import DeliveryMode
from broker.errors import IntakeRejected
from broker.intake import held
from broker.intake.routing import Router
from broker.model.case import CaseStatus
from broker.model.events import (
    EVENT_ADAPTER,
    AnyEvent,
    CaseClosed,
    CaseCreated,
    CaseStatusChanged,
    CaseUpdated,
    EventType,
    status_after,
    utc_now,
)
from broker.operations import metrics
from broker.operations.tracing import span
from broker.store.bulk import any_of, in_list, insert_rows, insert_rows_with_ids, pipelined, reserve_ids, update_rows
from broker.store.database import Store
from broker.store.tables import AuditEntry, CaseRecord, DeliveryRecord, EventRecord, HeldEvent, OutboxMessage, table
from broker.transport.pointer import DeliveryPointer, Handoff, OutboxEntry, outbox_rows

log = structlog.get_logger("casebridge.intake")


@dataclass(frozen=True)
class Receipt:
    case_id: str
    event_id: str
    #: The case's key; empty for an event held until its case arrives.
    case_pk: str
    duplicate: bool = False
    targets: list[str] = field(default_factory=list)
    #: Recorded, and held back until its case (or the case's earlier held events) can be taken in first.
    held: bool = False


class DuplicateEventConflict(IntakeRejected):
    """The event_id (or Idempotency-Key) was already used for a different event."""


class CaseNotFound(IntakeRejected):
    """A follow-up for a case that was never created (by this source)."""


def refusal_reason(refused: IntakeRejected) -> str:
    """A refusal in a word or two, for counting (the message says the rest)."""
    if isinstance(refused, CaseNotFound):
        return "case_not_found"
    if isinstance(refused, DuplicateEventConflict):
        return "id_reused"
    if refused.status_code == 409:
        return "case_exists"
    if refused.field == "case.service_code":
        return "unknown_service"
    return "rejected"


@dataclass(frozen=True)
class Submission:
    """One event offered for intake, with how and by whom it came."""

    event: AnyEvent
    via: str
    actor: str
    idempotency_key: str | None = None
    #: For events a LOB system reports about a case another system owns: the case, by our key. The event's
    #: ``case.case_id`` is then the owner's reference and its ``source`` the LOB system.
    case_pk: str | None = None
    #: A follow-up for a case not yet known is held back until the case arrives, instead of refused (AMQP: the
    #: sender's events may overtake each other on the way, a create published over another channel).
    hold_if_unknown: bool = False
    #: The body as received, kept with a held event so that, if its case never comes, it can be replayed.
    raw_body: bytes | None = None
    #: Taken out of the held events (in the order they arrived): it goes in now, not behind itself, and its row
    #: is removed as it does (or kept as a failed message if it is refused all the same).
    held_row: held.HeldRow | None = None

    @property
    def released_from_hold(self) -> bool:
        return self.held_row is not None


#: What became of a submission: its receipt, or why it was refused (nothing of it was recorded).
Outcome = Receipt | IntakeRejected


class Intake:
    def __init__(self, store: Store, configuration: Configuration, *, hold_seconds: float = 300.0) -> None:
        self.store = store
        self.catalogue = configuration.catalogue
        self.router = Router(configuration)
        #: How long a follow-up waits for its case before it is failed with the reason.
        self.hold_seconds = hold_seconds
        #: This process's relay, when it has one: each commit's delivery pointers are handed to it to publish at
        #: once, their outbox rows reserved for it meanwhile, instead of every relay having to look for them.
        self.handoff: Handoff | None = None
        #: How long a handed row is reserved: past it, a relay takes it from the store (its process died first).
        self.handoff_reserve_seconds = 10.0

    def accept(
        self, event: AnyEvent, *, via: str, actor: str, idempotency_key: str | None = None
    ) -> Receipt:
        """Record ``event``; return the receipt (the original one when the event was seen before)."""
        outcome = self.accept_many([Submission(event, via, actor, idempotency_key)])[0]
        if isinstance(outcome, IntakeRejected):
            raise outcome
        return outcome

    def accept_many(self, submissions: list[Submission]) -> list[Outcome]:
        """Record every acceptable submission in one transaction; one outcome per submission, in order."""
        for attempt in range(3):
            try:
                with span("casebridge.intake", events=len(submissions),
                          correlation_id=sorted({item.event.effective_correlation_id for item in submissions})), \
                        self.store.transaction() as session:
                    batch = _IntakeBatch(self, session, utc_now())
                    outcomes = batch.run(submissions)
                if batch.handed and self.handoff is not None:
                    self.handoff.hand(batch.handed)
                metrics.INTAKE_TRANSACTION_EVENTS.observe(len(submissions))
                for item, outcome in zip(submissions, outcomes, strict=True):
                    if isinstance(outcome, IntakeRejected):
                        metrics.EVENTS_REFUSED.labels(item.event.source, refusal_reason(outcome)).inc()
                return outcomes
            except IntegrityError:
                # A concurrent worker recorded one of the same events or cases first; the next pass sees it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def take_in_held(self, rows: list[held.HeldRow]) -> list[Outcome]:
        """Held follow-ups whose case has arrived, taken in now, in the order they arrived."""
        return self.accept_many([_released(row) for row in rows])

    def check_service(self, event: AnyEvent) -> None:
        if isinstance(event, CaseCreated | CaseUpdated):
            code = event.case.service_code
            if code not in self.catalogue.services:
                raise IntakeRejected(
                    "case.service_code", f"unknown service code {code!r}: not in the council's service catalogue"
                )


@dataclass(frozen=True)
class _Lookups:
    """A batch's look-ups, built once and run with their values bound: for the one or two events of a quiet
    moment's transaction, building a statement (and its cache key) anew each time cost more than running it."""

    earlier_by_id: Select[Any]
    earlier_by_id_or_key: Select[Any]
    #: Stored cases of one source by case id, locked (PostgreSQL) until the batch commits.
    cases: Select[Any]
    cases_by_pk: Select[Any]
    last_sequences: Select[Any]


@functools.cache
def _lookups(postgres: bool) -> _Lookups:
    events, cases = table(EventRecord).c, table(CaseRecord).c
    # Plain rows, not ORM objects, which would cost more to build than to decide.
    event_columns = (events.event_id, events.source, events.idempotency_key, events.case_pk, events.payload)
    case_columns = (cases.id, cases.source, cases.case_id, cases.service_code, cases.status, cases.snapshot,
                    cases.updated_at)
    by_id = in_list(events.event_id, "event_ids", postgres=postgres)
    by_key = and_(in_list(events.source, "sources", postgres=postgres),
                  in_list(events.idempotency_key, "keys", postgres=postgres))

    def locked(query: Select[Any]) -> Select[Any]:
        return query.with_for_update() if postgres else query

    return _Lookups(
        earlier_by_id=select(*event_columns).where(by_id),
        earlier_by_id_or_key=select(*event_columns).where(or_(by_id, by_key)),
        cases=locked(select(*case_columns).where(cases.source == bindparam("source"),
                                                 in_list(cases.case_id, "case_ids", postgres=postgres))),
        cases_by_pk=locked(select(*case_columns).where(in_list(cases.id, "ids", postgres=postgres))),
        last_sequences=select(events.case_pk, func.max(events.sequence))
        .where(in_list(events.case_pk, "case_pks", postgres=postgres)).group_by(events.case_pk),
    )


@dataclass
class _CaseState:
    """A case's values while a batch is decided; written back (inserted, or updated if ``stored``) at the end."""

    id: str
    source: str
    case_id: str
    service_code: str
    status: str
    snapshot: dict[str, Any]
    updated_at: datetime
    stored: bool = False

    def insert_values(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "case_id": self.case_id, "service_code": self.service_code,
                "status": self.status, "snapshot": self.snapshot, "created_at": self.updated_at,
                "updated_at": self.updated_at}


class _IntakeBatch:
    """One transaction's worth of submissions: looked up together, decided in order, written in bulk."""

    def __init__(self, intake: Intake, session: Session, now: datetime) -> None:
        self.intake = intake
        self.session = session
        #: The look-ups run on the connection itself: they need none of the ORM's bookkeeping.
        self.connection = session.connection()
        self.lookups = _lookups(intake.store.is_postgres)
        self.now = now
        self.touched: dict[tuple[str, str], _CaseState] = {}
        self.cases_by_pk: dict[str, Row[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.accepted_here: dict[str, tuple[dict[str, Any], Receipt]] = {}
        self._sequences: dict[str, int] = {}
        #: (source, case_id) of cases with follow-ups held back: later follow-ups queue behind them.
        self.held_keys: set[tuple[str, str]] = set()
        self.holding: list[dict[str, Any]] = []
        self.held_ids: set[str] = set()
        #: Cases found with follow-ups held by earlier transactions: only theirs need taking in when created.
        self.stored_held_keys: set[tuple[str, str]] = set()
        #: When each case's latest recorded status change happened.
        self.status_at: dict[str, datetime] = {}
        self.released_ids: list[int] = []
        self.refused_after_hold: list[tuple[held.HeldRow, IntakeRejected]] = []
        #: The outbox entries for the intake's relay to publish once this commits.
        self.handed: list[OutboxEntry] = []

    def run(self, submissions: list[Submission]) -> list[Outcome]:
        outcomes = self._decide_all(submissions)
        self._settle_released(submissions, outcomes)
        created = {key for key, case in self.touched.items() if not case.stored}
        if created:
            self._release_held(created)
        self._write()
        if created:  # once the cases are written
            held.link_refused(self.session, {key: self.touched[key].id for key in created}, self.now)
        return outcomes

    def _release_held(self, created: set[tuple[str, str]]) -> None:
        """Follow-ups that came before their case go in right behind it, in the order they arrived: those held
        by earlier transactions, then those held a moment ago in this one."""
        # A follow-up held by a transaction that committed after the look-up is taken in by the relay's sweep.
        stored = held.take_held(self.session, created & self.stored_held_keys)
        here = [held.HeldRow.from_values(values) for values in self.holding
                if (values["source"], values["case_ref"]) in created]
        if not stored and not here:
            return
        self.holding = [values for values in self.holding if (values["source"], values["case_ref"]) not in created]
        for key in created:
            self.held_keys.discard(key)
        rows = [*stored, *here]
        released = [_released(row) for row in rows]
        self._settle_released(released, self._decide_all(released))
        log.info("held.released", count=len(rows), cases=len(created))

    def _settle_released(self, submissions: list[Submission], outcomes: list[Outcome]) -> None:
        """Held events that went in lose their row; one refused all the same is kept for support staff (nobody
        is waiting for the answer)."""
        for item, outcome in zip(submissions, outcomes, strict=True):
            if item.held_row is None:
                continue
            if item.held_row.id is not None:
                self.released_ids.append(item.held_row.id)
            if isinstance(outcome, IntakeRejected):
                self.refused_after_hold.append((item.held_row, outcome))

    def _decide_all(self, submissions: list[Submission]) -> list[Outcome]:
        payloads = [item.event.model_dump(mode="json") for item in submissions]
        earlier = self._earlier_events(submissions)
        cases = self._existing_cases(submissions)
        self.cases_by_pk.update(self._cases_by_pk(submissions))
        keys_held, ids_held = held.already_held(
            self.session, {(item.event.source, item.event.case_id) for item in submissions
                           if not item.released_from_hold},
            {str(item.event.event_id) for item in submissions if not item.released_from_hold})
        self.held_keys |= keys_held
        self.stored_held_keys |= keys_held
        self.held_ids |= ids_held
        sequences = self._last_sequences([case.id for case in [*cases.values(), *self.cases_by_pk.values()]])
        sequences.update(self._sequences)  # what this transaction has numbered already
        outcomes: list[Outcome] = []
        for item, payload in zip(submissions, payloads, strict=True):
            try:
                outcomes.append(self._decide(item, payload, earlier, cases, sequences))
            except IntakeRejected as rejected:
                outcomes.append(rejected)
        self._sequences.update(sequences)
        return outcomes

    # -- lookups: a handful of queries for the whole batch ----------------------------------------------------

    def _earlier_events(self, submissions: list[Submission]) -> dict[str, Row[Any]]:
        """Events already recorded, by event_id and by ``key:<source>:<Idempotency-Key>``: one query."""
        lookups = self.lookups
        keys = {(item.event.source, item.idempotency_key) for item in submissions if item.idempotency_key}
        event_ids = {str(item.event.event_id) for item in submissions}
        parameters: dict[str, Any] = {"event_ids": list(event_ids)}
        if keys:
            parameters.update(sources=list({source for source, _ in keys}), keys=list({key for _, key in keys}))
        rows = self.connection.execute(lookups.earlier_by_id_or_key if keys else lookups.earlier_by_id, parameters)
        found: dict[str, Row[Any]] = {}
        for row in rows:
            if row.event_id in event_ids:
                found[row.event_id] = row
            if (row.source, row.idempotency_key) in keys:
                found[f"key:{row.source}:{row.idempotency_key}"] = row
        return found

    def _existing_cases(self, submissions: list[Submission]) -> dict[tuple[str, str], Row[Any]]:
        by_source: dict[str, set[str]] = {}
        for item in submissions:
            by_source.setdefault(item.event.source, set()).add(item.event.case_id)
        cases: dict[tuple[str, str], Row[Any]] = {}
        for source, case_ids in by_source.items():
            rows = self.connection.execute(self.lookups.cases, {"source": source, "case_ids": list(case_ids)})
            cases.update({(case.source, case.case_id): case for case in rows})
        return cases

    def _cases_by_pk(self, submissions: list[Submission]) -> dict[str, Row[Any]]:
        wanted = {item.case_pk for item in submissions if item.case_pk}
        if not wanted:
            return {}
        return {case.id: case for case in self.connection.execute(self.lookups.cases_by_pk, {"ids": list(wanted)})}

    def _last_sequences(self, case_pks: list[str]) -> dict[str, int]:
        if not case_pks:
            return {}
        rows = self.connection.execute(self.lookups.last_sequences, {"case_pks": case_pks}).all()
        return {case_pk: sequence for case_pk, sequence in rows}

    # -- decisions, in the order the submissions arrived --------------------------------------------------------

    def _decide(
        self,
        item: Submission,
        payload: dict[str, Any],
        earlier: dict[str, Row[Any]],
        cases: dict[tuple[str, str], Row[Any]],
        sequences: dict[str, int],
    ) -> Receipt:
        event = item.event
        event_id = str(event.event_id)
        duplicate = self._duplicate(item, payload, earlier)
        if duplicate is not None:
            return duplicate
        if event_id in self.held_ids:
            return Receipt(event.case_id, event_id, "", duplicate=True, held=True)
        self.intake.check_service(event)
        key = (event.source, event.case_id)
        if key in self.held_keys and not isinstance(event, CaseCreated) and item.case_pk is None \
                and not item.released_from_hold:
            return self._hold(item, payload, None)  # earlier follow-ups of this case are held: it goes behind them
        try:
            case = self._case_for(event, cases, item.case_pk, payload)
        except CaseNotFound:
            if not item.hold_if_unknown:
                raise
            self.held_keys.add(key)
            return self._hold(item, payload, self.now + timedelta(seconds=self.intake.hold_seconds))
        sequence = sequences.get(case.id, 0) + 1
        sequences[case.id] = sequence
        superseded_by = self._newer_status(case, event)
        if superseded_by is None:
            self._apply(case, event, payload)
            decisions = self.intake.router.targets_for(case.service_code, event.event_type, event.source)
        else:  # recorded in the history, but neither applied nor sent: it would undo a later change
            decisions = []
        targets = [decision.target for decision in decisions]
        self.events.append({
            "event_id": event_id, "case_pk": case.id, "sequence": sequence, "event_type": event.event_type.value,
            "schema_version": event.schema_version, "source": event.source,
            "correlation_id": event.effective_correlation_id, "occurred_at": event.occurred_at,
            "received_at": self.now, "received_via": item.via, "idempotency_key": item.idempotency_key,
            "payload": payload,
        })
        for step, detail in (
            ("received", {"via": item.via, "event_type": event.event_type.value, "sequence": sequence,
                          **({"held_since": item.held_row.received_at.isoformat()} if item.held_row else {})}),
            ("validated", {"schema_version": event.schema_version}),
            ("routed", {"targets": targets, "routes": sorted({decision.route for decision in decisions})})
            if superseded_by is None else
            ("superseded", {"reason": "a status change that happened later is already recorded",
                            "later_change_at": superseded_by.isoformat()}),
        ):
            self.audit.append({"case_pk": case.id, "event_id": event_id, "target": None, "step": step,
                               "actor": item.actor, "detail": detail, "at": self.now})
        for decision in decisions:
            self.deliveries.append({
                "event_id": event_id, "case_pk": case.id, "target": decision.target, "mode": decision.mode.value,
                "state": "pending" if decision.mode is DeliveryMode.realtime else "batch_pending", "sequence": sequence,
                "attempts": 0, "created_at": self.now, "updated_at": self.now,
            })
        metrics.EVENTS_ACCEPTED.labels(event.source, item.via, event.event_type.value).inc()
        log.info(
            "event.accepted", event_id=event_id, case_id=event.case_id, correlation_id=event.effective_correlation_id,
            event_type=event.event_type.value, via=item.via, targets=targets,
        )
        receipt = Receipt(event.case_id, event_id, case.id, targets=targets)
        self.accepted_here[event_id] = (payload, receipt)
        if item.idempotency_key:
            self.accepted_here[f"key:{event.source}:{item.idempotency_key}"] = (payload, receipt)
        return receipt

    def _newer_status(self, case: _CaseState, event: AnyEvent) -> datetime | None:
        """When a status change that happened after ``event`` is already recorded for the case: a replayed or
        late status change must not put the case (and its targets) back to an older status."""
        if not isinstance(event, CaseStatusChanged | CaseClosed):
            return None
        if case.id not in self.status_at and case.stored:
            self.status_at.update(self._status_times([case.id]))
        latest = self.status_at.get(case.id)
        if latest is not None and event.occurred_at < latest:
            return latest
        self.status_at[case.id] = event.occurred_at
        return None

    def _status_times(self, case_pks: list[str]) -> dict[str, datetime]:
        rows = self.session.execute(
            select(EventRecord.case_pk, func.max(EventRecord.occurred_at))
            .where(any_of(self.session, EventRecord.case_pk, case_pks),
                   EventRecord.event_type.in_((EventType.status_changed.value, EventType.closed.value)))
            .group_by(EventRecord.case_pk)
        ).all()
        return {case_pk: _aware(latest) for case_pk, latest in rows if latest is not None}

    def _hold(self, item: Submission, payload: dict[str, Any], expires_at: datetime | None) -> Receipt:
        """Keep a follow-up back, durably, until its case (or the case's earlier held follow-ups) is in."""
        event = item.event
        event_id = str(event.event_id)
        self.holding.append({
            "event_id": event_id, "source": event.source, "case_ref": event.case_id, "via": item.via,
            "actor": item.actor, "idempotency_key": item.idempotency_key, "payload": payload,
            "raw_body": item.raw_body, "received_at": self.now,
            "expires_at": expires_at or self.now + timedelta(seconds=self.intake.hold_seconds),
        })
        log.info("event.held", event_id=event_id, case_id=event.case_id, via=item.via,
                 reason="its case is not known yet" if expires_at else "earlier events of its case are held")
        receipt = Receipt(event.case_id, event_id, "", held=True)
        self.accepted_here[event_id] = (payload, receipt)
        return receipt

    def _duplicate(self, item: Submission, payload: dict[str, Any], earlier: dict[str, Row[Any]]) -> Receipt | None:
        event_id = str(item.event.event_id)
        keys = [event_id]
        if item.idempotency_key:
            keys.append(f"key:{item.event.source}:{item.idempotency_key}")
        for key in keys:
            if key in self.accepted_here:
                first_payload, receipt = self.accepted_here[key]
                self._refuse_if_different(first_payload, payload, key == event_id)
                return Receipt(receipt.case_id, receipt.event_id, receipt.case_pk, duplicate=True,
                               targets=receipt.targets)
            if key in earlier:
                record = earlier[key]
                self._refuse_if_different(record.payload, payload, key == event_id)
                case = self.session.get_one(CaseRecord, record.case_pk)
                targets = self.session.scalars(
                    select(DeliveryRecord.target).where(DeliveryRecord.event_id == record.event_id)
                    .order_by(DeliveryRecord.id)
                ).all()
                log.info("event.duplicate", event_id=event_id, case_id=case.case_id, via=item.via)
                return Receipt(case.case_id, record.event_id, case.id, duplicate=True, targets=list(targets))
        return None

    @staticmethod
    def _refuse_if_different(first: dict[str, Any], again: dict[str, Any], by_event_id: bool) -> None:
        if not by_event_id:
            # A sender that retries with the same Idempotency-Key may mint a new event id for the same request:
            # that is the very resend the key exists to catch, so the event id does not make it different.
            first, again = ({k: v for k, v in payload.items() if k != "event_id"} for payload in (first, again))
        if first != again:
            raise DuplicateEventConflict(
                "event_id" if by_event_id else "Idempotency-Key", "already used for a different event", status_code=409
            )

    def _case_for(self, event: AnyEvent, cases: dict[tuple[str, str], Row[Any]],
                  case_pk: str | None, payload: dict[str, Any]) -> _CaseState:
        """The case's state in this batch, whether it is stored already or created by this batch."""
        key = (event.source, event.case_id)
        stored = cases.get(key)
        if case_pk is not None:
            stored = self.cases_by_pk.get(case_pk)
            key = (stored.source, stored.case_id) if stored else ("", case_pk)
        state = self.touched.get(key)
        if isinstance(event, CaseCreated):
            if state is not None or stored is not None:
                raise IntakeRejected(
                    "case.case_id",
                    f"case {event.case_id!r} already exists for source {event.source!r}; send case.updated",
                    status_code=409,
                )
            state = _CaseState(
                id=str(uuid.uuid4()), source=event.source, case_id=event.case_id,
                service_code=event.case.service_code, status=event.case.status.value,
                snapshot=payload["case"], updated_at=self.now,  # the case as dumped with its event
            )
        elif state is None:
            if stored is None:
                raise CaseNotFound(
                    "case.case_id", f"no case {event.case_id!r} from source {event.source!r}", status_code=404
                )
            state = _CaseState(
                id=stored.id, source=stored.source, case_id=stored.case_id, service_code=stored.service_code,
                status=stored.status, snapshot=stored.snapshot, updated_at=stored.updated_at, stored=True,
            )
        self.touched[key] = state
        return state

    def _apply(self, case: _CaseState, event: AnyEvent, payload: dict[str, Any]) -> None:
        if isinstance(event, CaseUpdated):
            case.service_code = event.case.service_code
            case.snapshot = payload["case"]
        new_status = status_after(event, CaseStatus(case.status))
        if new_status.value != case.status:
            case.status = new_status.value
            case.snapshot = {**case.snapshot, "status": new_status.value}
        case.updated_at = self.now

    # -- writes: a few bulk statements ----------------------------------------------------------------------------

    def _write(self) -> None:
        with pipelined(self.session):  # the driver's statements only: SQLAlchemy reads each result it asks for
            self._write_rows()
        held.forget(self.session, self.released_ids)
        for row, refused in self.refused_after_hold:
            held.refuse_released(self.session, row, refused, self.now)

    def _write_rows(self) -> None:
        session = self.session
        created = [case.insert_values() for case in self.touched.values() if not case.stored]
        insert_rows(session, CaseRecord, created)
        update_rows(session, CaseRecord, [
            {"id": case.id, "service_code": case.service_code, "status": case.status, "snapshot": case.snapshot,
             "updated_at": case.updated_at}
            for case in self.touched.values() if case.stored
        ])
        insert_rows(session, EventRecord, self.events)
        insert_rows(session, AuditEntry, self.audit)
        realtime = sum(1 for delivery in self.deliveries if delivery["mode"] == DeliveryMode.realtime.value)
        # One round trip for both tables' ids (PostgreSQL); elsewhere each insert returns its own.
        reserved = reserve_ids(session, [(DeliveryRecord, len(self.deliveries)), (OutboxMessage, realtime)])
        delivery_ids = insert_rows_with_ids(session, DeliveryRecord, self.deliveries,
                                            reserved[0] if reserved else None)
        insert_rows(session, HeldEvent, self.holding)
        handoff = self.intake.handoff is not None and self.intake.handoff.accepting()
        rows = outbox_rows((
            DeliveryPointer(delivery_id, delivery["target"], delivery["event_id"], delivery["case_pk"])
            for delivery_id, delivery in zip(delivery_ids, self.deliveries, strict=True)
            if delivery["mode"] == DeliveryMode.realtime.value
        ), self.now, self.now + timedelta(seconds=self.intake.handoff_reserve_seconds) if handoff else None)
        outbox_ids = insert_rows_with_ids(session, OutboxMessage, rows, reserved[1] if reserved else None)
        if handoff:
            self.handed = [OutboxEntry(outbox_id, row["target"], row["body"])
                           for outbox_id, row in zip(outbox_ids, rows, strict=True)]


def _aware(moment: datetime) -> datetime:
    """SQLite's aggregate hands back a naive (UTC) time, where the column type is not applied."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _released(row: held.HeldRow) -> Submission:
    """A held follow-up as a submission again, to be taken in now (not held behind itself)."""
    return Submission(EVENT_ADAPTER.validate_python(row.payload), row.via, row.actor,
                      idempotency_key=row.idempotency_key, raw_body=row.raw_body, held_row=row)
