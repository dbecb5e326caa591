"""The ``batch.export`` job: a target's pending batch deliveries, as one CSV file on its SFTP server.

The order of steps is what makes it safe:

1. the file is recorded as ``uploading`` together with the deliveries it will carry (nothing sent yet);
2. the CSV is written to a local temporary file, streamed from the store;
3. it is uploaded under a hidden temporary name and renamed into place only when complete;
4. one transaction then marks those deliveries delivered, audits them and records the file as ``uploaded``.

A failed upload releases the deliveries (still pending for the next run). A crash anywhere leaves the file
``uploading``: the next run looks for it on the server, and completes it if the rename had happened (no second
file, no duplicates) or releases its deliveries if it had not.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, delete, exists, func, insert, literal, null, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.orm import Session

from broker.batch.config import ExportColumn, ExportFormat, ExportOptions, render_file_name
from broker.batch.csv_export import RowWriter
from broker.batch.errors import BatchError
from broker.batch.names import remote_path, temporary_path
from broker.batch.settings import batch_mapping
from broker.batch.sftp import SftpSession
from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import (
    AuditEntry,
    BatchFile,
    BatchFileDelivery,
    CaseRecord,
    DeliveryRecord,
    EventRecord,
    Json,
)

if TYPE_CHECKING:
    from broker.scheduling.context import JobContext

log = structlog.get_logger("casebridge.batch.export")

_FETCH = 2_000


@dataclass
class ExportResult:
    files: int = 0
    rows: int = 0
    recovered: int = 0
    released: int = 0
    file: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"files": self.files, "rows": self.rows, "failures": 0, "recovered_files": self.recovered,
                "released_files": self.released, "file": self.file}


def run_export(context: JobContext, options: ExportOptions, schedule: str) -> ExportResult:
    target = context.configuration.targets.get(options.target)
    if target is None:
        raise BatchError(f"unknown target {options.target!r}")
    mapping = batch_mapping(target)
    if mapping.export is None:
        raise BatchError(f"target {options.target!r} has no batch.export format in its mapping file")
    fmt, columns = mapping.export, options.columns or mapping.export.columns
    store, result = context.store, ExportResult()
    with SftpSession(mapping.sftp) as sftp:
        for outcome in _recover(store, schedule, sftp):
            if outcome:
                result.recovered += 1
            else:
                result.released += 1
        sftp.ensure_directory(options.remote_dir)
        now = utc_now()
        name = _free_name(store, sftp, options.remote_dir,
                          render_file_name(options.file_name, options.target, now, fmt.timezone))
        file_id, count = _claim(store, schedule, options, name, now)
        if count == 0:
            return result
        try:
            with tempfile.TemporaryFile() as local:
                size, sha256 = _write(store, file_id, fmt, columns, local, count, context)
                _record_contents(store, file_id, size, sha256)
                local.seek(0)
                progress = context.progress
                sftp.upload(local, size, options.remote_dir, name,
                            None if progress is None else lambda sent, total: progress("bytes", sent, total))
        except Exception as exc:
            # The rename may have happened even so (a connection lost after the server did it): ask the server
            # before releasing anything. If it cannot be asked, the file stays ``uploading`` and the next run asks.
            try:
                completed = _settle(store, sftp, file_id, f"{type(exc).__name__}: {exc}")
            except Exception:
                log.warning("batch.export.unsettled", target=options.target, file=name)
                completed = False
            if not completed:
                raise BatchError(f"upload of {name} failed; its {count} deliveries stay pending: {exc}") from exc
        else:
            _complete(store, file_id, name)
        result.files, result.rows, result.file = 1, count, name
    log.info("batch.exported", target=options.target, file=name, rows=count)
    return result


def _free_name(store: Store, sftp: SftpSession, directory: str, wanted: str) -> str:
    """``wanted``, or ``<stem>_2.<suffix>`` and so on if a file of that name exists or was already exported
    (two runs in the same minute; a name template without seconds)."""
    stem, dot, suffix = wanted.rpartition(".")
    if not dot:
        stem, suffix = wanted, ""
    candidate, number = wanted, 1
    while True:
        with store.read() as session:
            known = session.scalar(select(BatchFile.id).where(
                BatchFile.direction == "export", BatchFile.remote_dir == directory, BatchFile.name == candidate,
                BatchFile.state != "abandoned").limit(1))
        if known is None and sftp.size_of(remote_path(directory, candidate)) is None:
            return candidate
        number += 1
        candidate = f"{stem}_{number}{dot}{suffix}"


def _claim(store: Store, schedule: str, options: ExportOptions, name: str, now: datetime) -> tuple[int, int]:
    """Record the file as ``uploading`` and claim the deliveries it will carry, in one transaction."""
    with store.transaction() as session:
        file = BatchFile(schedule=schedule, target=options.target, direction="export", name=name,
                         remote_dir=options.remote_dir, state="uploading", rows=0, failed_rows=0, created_at=now)
        session.add(file)
        session.flush()
        claimed = BatchFileDelivery.__table__.alias("claimed")
        in_flight = (select(literal(1)).select_from(claimed.join(BatchFile, BatchFile.id == claimed.c.file_id))
                     .where(claimed.c.delivery_id == DeliveryRecord.id, BatchFile.state == "uploading"))
        pending = (
            select(literal(file.id), DeliveryRecord.id)
            .where(DeliveryRecord.target == options.target, DeliveryRecord.state == "batch_pending",
                   ~exists(in_flight))
            .order_by(DeliveryRecord.id).limit(options.max_rows)
        )
        session.execute(insert(BatchFileDelivery).from_select(["file_id", "delivery_id"], pending))
        count = session.scalar(select(func.count()).select_from(BatchFileDelivery)
                               .where(BatchFileDelivery.file_id == file.id)) or 0
        if count == 0:
            session.delete(file)
        else:
            file.rows = count
        return file.id, count


def _records(session: Session, file_id: int) -> Any:
    # The case as the event carried it (what the target was sent); the stored snapshot only for events that do
    # not carry the whole case, so each row decodes one JSON document, not two.
    whole_case = EventRecord.event_type.in_(("case.created", "case.updated"))
    query = (
        select(DeliveryRecord.event_id, CaseRecord.case_id, CaseRecord.source, CaseRecord.service_code,
               CaseRecord.status, sql_case((~whole_case, CaseRecord.snapshot), else_=null()).label("snapshot"),
               EventRecord.event_type, EventRecord.occurred_at, EventRecord.correlation_id,
               sql_case((whole_case, EventRecord.payload), else_=null()).label("payload"))
        .select_from(BatchFileDelivery)
        .join(DeliveryRecord, DeliveryRecord.id == BatchFileDelivery.delivery_id)
        .join(EventRecord, EventRecord.event_id == DeliveryRecord.event_id)
        .join(CaseRecord, CaseRecord.id == DeliveryRecord.case_pk)
        .where(BatchFileDelivery.file_id == file_id)
        .order_by(DeliveryRecord.id)
        .execution_options(yield_per=_FETCH)
    )
    for row in session.execute(query):
        sent = row.payload.get("case") if isinstance(row.payload, dict) else None
        case = sent if isinstance(sent, dict) else row.snapshot
        yield {"event_id": row.event_id, "case_id": row.case_id, "source": row.source,
               "service_code": row.service_code, "status": row.status, "event_type": row.event_type,
               "occurred_at": row.occurred_at, "correlation_id": row.correlation_id, "case": case}


def _write(store: Store, file_id: int, fmt: ExportFormat, columns: list[ExportColumn], local: IO[bytes],
           count: int, context: JobContext) -> tuple[int, str]:
    writer = RowWriter(local, fmt, columns)
    writer.header()
    batch: list[dict[str, Any]] = []
    with store.read() as session:
        for record in _records(session, file_id):
            batch.append(record)
            if len(batch) >= _FETCH:
                writer.write(batch)
                batch.clear()
                if context.progress is not None:
                    context.progress("rows", writer.rows, count)
        writer.write(batch)
    writer.close()
    if context.progress is not None:
        context.progress("rows", writer.rows, count)
    size = local.tell()
    local.seek(0)
    digest = hashlib.sha256()
    while chunk := local.read(1 << 20):
        digest.update(chunk)
    return size, digest.hexdigest()


def _record_contents(store: Store, file_id: int, size: int, sha256: str) -> None:
    with store.transaction() as session:
        session.execute(update(BatchFile).where(BatchFile.id == file_id).values(size=size, sha256=sha256))


def _complete(store: Store, file_id: int, name: str) -> None:
    """The file is in place: mark its deliveries delivered and the file uploaded, in one transaction."""
    now = utc_now()
    with store.transaction() as session:
        file = session.get_one(BatchFile, file_id)
        carried = select(BatchFileDelivery.delivery_id).where(BatchFileDelivery.file_id == file_id)
        still_pending = and_(DeliveryRecord.id.in_(carried), DeliveryRecord.state == "batch_pending")
        session.execute(insert(AuditEntry).from_select(
            ["case_pk", "event_id", "target", "step", "actor", "detail", "at"],
            select(DeliveryRecord.case_pk, DeliveryRecord.event_id, DeliveryRecord.target, literal("delivered"),
                   literal(f"schedule:{file.schedule}"),
                   literal({"file": name, "remote_dir": file.remote_dir}, Json), literal(now, AuditEntry.at.type))
            .where(still_pending),
        ))
        # synchronize_session=False: nothing of these rows is loaded here, and fetching their keys to synchronise
        # would bring every one of them into memory.
        session.execute(update(DeliveryRecord).where(still_pending).values(
            state="delivered", delivered_at=now, updated_at=now, attempts=DeliveryRecord.attempts + 1,
            external_ref=name[:200],
        ).execution_options(synchronize_session=False))
        file.state, file.completed_at = "uploaded", now


def _release(store: Store, file_id: int, error: str) -> None:
    """The upload did not happen: the deliveries are free for the next run; the file is kept as abandoned."""
    with store.transaction() as session:
        session.execute(delete(BatchFileDelivery).where(BatchFileDelivery.file_id == file_id))
        session.execute(update(BatchFile).where(BatchFile.id == file_id).values(
            state="abandoned", error=error[:4000], completed_at=utc_now()))


def _recover(store: Store, schedule: str, sftp: SftpSession) -> list[bool]:
    """Finish what an interrupted run left ``uploading``: True for each file completed, False for each released."""
    with store.read() as session:
        left = session.scalars(select(BatchFile.id).where(BatchFile.schedule == schedule,
                                                           BatchFile.state == "uploading").order_by(BatchFile.id)).all()
    return [_settle(store, sftp, file_id, "interrupted run") for file_id in left]


def _settle(store: Store, sftp: SftpSession, file_id: int, why: str) -> bool:
    """Decide an ``uploading`` file by what the server holds: complete it if it is in place with its recorded
    size (the rename happened), else release its deliveries and remove any partial upload. True if completed."""
    with store.read() as session:
        file = session.get_one(BatchFile, file_id)
    remote_size = sftp.size_of(remote_path(file.remote_dir, file.name))
    if remote_size is not None and file.size is not None and remote_size == file.size:
        _complete(store, file.id, file.name)
        log.warning("batch.export.completed_late", schedule=file.schedule, file=file.name)
        return True
    sftp.remove_if_present(temporary_path(file.remote_dir, file.name))
    found = "not on the server" if remote_size is None else f"on the server with another size ({remote_size})"
    _release(store, file.id, f"{why}: the file was {found}; its deliveries were released")
    log.warning("batch.export.released", schedule=file.schedule, file=file.name)
    return False
