"""Turn imported rows into canonical events: status changes, LOB references, and cases raised in the LOB.

A row names its case by our reference (``case_id``, as we exported it) or by the LOB system's (``lob_ref``):

- a case we sent, with a LOB reference: the reference is recorded for the target;
- a case we know, with a status: a ``case.status_changed`` event from the LOB system;
- a LOB reference we have never seen and no case_id: a case raised in the LOB system, as ``case.created``.

Event ids derive from the file's checksum and the row's line, so a file re-read after a crash produces the
same events, which the intake recognises and does not take twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from broker.batch.config import ImportFormat
from broker.batch.csv_import import Row, parse_date
from broker.batch.errors import RowError
from broker.errors import clean_message
from broker.intake.transaction import Submission
from broker.model.case import case_id_from_reference
from broker.model.events import AnyEvent, CaseCreated, CaseStatusChanged
from broker.store.bulk import any_of
from broker.store.tables import CaseRecord, DeliveryRecord, ExternalRef

#: Namespace of the ids given to imported rows (uuid5 of target, file checksum and line).
ROW_NAMESPACE = uuid.UUID("2b0e3f7c-5d0a-4e1b-8c36-7a9f64c1d2e5")


def row_id(target: str, sha256: str, line: int) -> uuid.UUID:
    return uuid.uuid5(ROW_NAMESPACE, f"{target}:{sha256}:{line}")


@dataclass
class Planned:
    """What one good row becomes."""

    line: int
    submission: Submission | None = None
    reference: tuple[str, str] | None = None  # (case_pk, LOB reference) to record
    new_case_ref: str | None = None           # a LOB reference whose case this row creates


@dataclass
class ChunkPlan:
    planned: list[Planned] = field(default_factory=list)
    failed: list[tuple[Row, RowError]] = field(default_factory=list)


class RowMapper:
    def __init__(self, target: str, system: str, fmt: ImportFormat, sha256: str, file_time: datetime,
                 actor: str) -> None:
        self.target, self.system, self.fmt = target, system, fmt
        self.sha256, self.file_time, self.actor = sha256, file_time, actor

    def plan(self, session: Session, rows: list[Row]) -> ChunkPlan:
        columns = self.fmt.columns
        ours = {row.values.get(columns.case_id or "", "") for row in rows} - {""}
        theirs = {row.values.get(columns.lob_ref or "", "") for row in rows} - {""}
        by_case_id = self._cases_sent(session, ours)
        by_lob_ref = self._cases_by_reference(session, theirs)
        plan, created_here = ChunkPlan(), set[str]()
        for row in rows:
            if row.error is not None:
                plan.failed.append((row, row.error))
                continue
            try:
                plan.planned.append(self._plan_row(row, by_case_id, by_lob_ref, created_here))
            except RowError as error:
                plan.failed.append((row, error))
        return plan

    def _cases_sent(self, session: Session, case_ids: set[str]) -> dict[str, tuple[str, str]]:
        if not case_ids:
            return {}
        # One index probe of each case's deliveries, not a join: the planner would hash every delivery the target
        # ever had for a join, a cost that grows with the store while the file's rows stay a chunk.
        sent_here = (select(literal(1)).where(DeliveryRecord.case_pk == CaseRecord.id,
                                              DeliveryRecord.target == self.target)
                     .limit(1).correlate(CaseRecord).scalar_subquery())
        query = select(CaseRecord.case_id, CaseRecord.id).where(any_of(session, CaseRecord.case_id, case_ids),
                                                                sent_here.is_not(None))
        return {case_id: (pk, case_id) for case_id, pk in session.execute(query)}

    def _cases_by_reference(self, session: Session, references: set[str]) -> dict[str, tuple[str, str]]:
        if not references:
            return {}
        query = (select(ExternalRef.reference, CaseRecord.id, CaseRecord.case_id)
                 .join(CaseRecord, CaseRecord.id == ExternalRef.case_pk)
                 .where(ExternalRef.target == self.target, any_of(session, ExternalRef.reference, references)))
        return {reference: (pk, case_id) for reference, pk, case_id in session.execute(query)}

    def _plan_row(self, row: Row, by_case_id: dict[str, tuple[str, str]], by_lob_ref: dict[str, tuple[str, str]],
                  created_here: set[str]) -> Planned:
        columns, values = self.fmt.columns, row.values
        ours = values.get(columns.case_id, "") if columns.case_id else ""
        theirs = values.get(columns.lob_ref, "") if columns.lob_ref else ""
        status_text = values.get(columns.status, "") if columns.status else ""
        planned = Planned(row.line)
        if ours:
            if ours not in by_case_id:
                raise RowError("batch_unknown_case", f"no case {ours!r} was sent to {self.target}")
            case_pk, case_id = by_case_id[ours]
            if theirs:
                planned.reference = (case_pk, theirs)
        elif theirs in by_lob_ref:
            case_pk, case_id = by_lob_ref[theirs]
        elif theirs in created_here:
            case_pk, case_id = "", theirs
        elif theirs:
            planned.submission = Submission(self._new_case(row, theirs), "batch", self.actor)
            planned.new_case_ref = theirs
            created_here.add(theirs)
            return planned
        else:
            raise RowError("batch_no_reference", "the row names no case (both reference columns are empty)")
        if status_text:
            event = self._status_change(row, case_id, status_text)
            planned.submission = Submission(event, "batch", self.actor, case_pk=case_pk or None)
        elif planned.reference is None:
            raise RowError("batch_nothing_to_do", "the row carries neither a status nor a LOB reference")
        return planned

    def _occurred_at(self, row: Row) -> datetime:
        column = self.fmt.columns.occurred_at
        if column is None:
            return self.file_time
        text = row.values.get(column, "")
        if not text:
            raise RowError("batch_bad_date", f"column {column!r} is empty")
        return parse_date(text, self.fmt)

    def _status(self, text: str) -> str:
        status = self.fmt.statuses.get(text)
        if status is None:
            known = ", ".join(sorted(self.fmt.statuses)) or "none configured"
            raise RowError("batch_unknown_status", f"status {text!r} is not mapped (known: {known})")
        return status.value

    def _status_change(self, row: Row, case_id: str, status_text: str) -> AnyEvent:
        notes = row.values.get(self.fmt.columns.notes, "") if self.fmt.columns.notes else ""
        return self._validated(CaseStatusChanged, {
            "event_id": str(row_id(self.target, self.sha256, row.line)), "occurred_at": self._occurred_at(row),
            "source": self.system, "case": {"case_id": case_id},
            "change": {"status": self._status(status_text), "reason": notes or None,
                       "external_status_code": status_text[:100]},
        })

    def _new_case(self, row: Row, reference: str) -> AnyEvent:
        columns, values = self.fmt.columns, row.values
        service_text = values.get(columns.service, "") if columns.service else ""
        service = self.fmt.services.get(service_text)
        if service is None:
            raise RowError("batch_unknown_service",
                           f"a case raised in {self.target} needs a mapped service; {service_text!r} is not mapped")
        location = {key: values.get(column) or None for key, column in
                    (("address", columns.address), ("postcode", columns.postcode)) if column}
        status_text = values.get(columns.status, "") if columns.status else ""
        description = values.get(columns.description, "") if columns.description else ""
        return self._validated(CaseCreated, {
            "event_id": str(row_id(self.target, self.sha256, row.line)), "occurred_at": self._occurred_at(row),
            "source": self.system,
            "case": {"case_id": case_id_from_reference(reference), "service_code": service,
                     "channel": self.fmt.new_case_channel.value,
                     "description": description or f"Raised in {self.target}", "location": location,
                     "status": self._status(status_text) if status_text else "open",
                     "external_refs": {self.target: reference}},
        })

    @staticmethod
    def _validated(model: type[CaseCreated] | type[CaseStatusChanged], data: dict[str, object]) -> AnyEvent:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise RowError("batch_invalid_row", f"{where}: {clean_message(first['msg'])}") from exc
