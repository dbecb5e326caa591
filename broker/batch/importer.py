"""The ``batch.import`` job: new files in a remote directory, taken in row by row, then archived.

Each file is downloaded to a local temporary copy (streamed, checksummed) and looked up in the file ledger by
name, size and SHA-256: a file already processed is moved aside and not read again. Rows go to the normal intake
a chunk at a time; a bad row fails alone into the failed-message store with the file name, its line and the
reason. Only when every row is recorded is the file marked processed and moved to the archive directory.

A file that cannot be read safely as it stands (see ``FileRefused``) is refused before any of its rows is taken
in: it stays in the remote directory, its ledger row says ``refused`` with the reason (so it is read again, once
mended, by a later run), and once every other file has been taken in the run fails (``JobFailed``).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import insert, select, update

from broker.batch.config import ImportFormat, ImportOptions
from broker.batch.csv_import import CsvRows, Row
from broker.batch.errors import BatchError, FileRefused, RowError, UnsafeRemoteName
from broker.batch.names import check_name
from broker.batch.rows import ROW_NAMESPACE, RowMapper, row_id
from broker.batch.settings import batch_mapping
from broker.batch.sftp import RemoteFile, SftpSession
from broker.errors import IntakeRejected, JobFailed
from broker.intake.transaction import Intake
from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.references import remember_references
from broker.store.tables import AuditEntry, BatchFile, FailedMessage

if TYPE_CHECKING:
    from broker.scheduling.context import JobContext

log = structlog.get_logger("casebridge.batch.import")


@dataclass
class ImportResult:
    files: int = 0
    rows: int = 0
    failures: int = 0
    skipped_files: int = 0
    rejected_files: int = 0
    waiting_files: int = 0
    #: Files refused as they stand, by name, with the reason.
    refused: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"files": self.files, "rows": self.rows, "failures": self.failures,
                "skipped_files": self.skipped_files, "rejected_files": self.rejected_files,
                "waiting_files": self.waiting_files, "refused_files": len(self.refused)}


@dataclass(frozen=True)
class _Source:
    """Where rows come from: the target, its LOB system's name and the file."""

    target: str
    system: str
    schedule: str
    file: str


def run_import(context: JobContext, options: ImportOptions, schedule: str) -> ImportResult:
    target = context.configuration.targets.get(options.target)
    if target is None:
        raise BatchError(f"unknown target {options.target!r}")
    mapping = batch_mapping(target)
    if mapping.import_ is None:
        raise BatchError(f"target {options.target!r} has no batch.import format in its mapping file")
    system = target.definition.system or options.target
    result = ImportResult()
    with SftpSession(mapping.sftp) as sftp:
        for remote in _complete_files(sftp, options, result):
            source = _Source(options.target, system, schedule, remote.name)
            try:
                check_name(remote.name)
            except UnsafeRemoteName as exc:
                if _record_failures(context.store, source, [(Row(0, raw=remote.name), RowError(
                        "batch_unsafe_file_name", str(exc)))], uuid.uuid5(ROW_NAMESPACE, f"name:{remote.name}")):
                    result.failures += 1
                continue
            _import_file(context, options, mapping.import_, sftp, remote, source, result)
    log.info("batch.imported", target=options.target, **result.summary())
    if result.refused:
        raise JobFailed("refused " + "; ".join(f"{name}: {why}" for name, why in result.refused.items()),
                        result.summary())
    return result


def _complete_files(sftp: SftpSession, options: ImportOptions, result: ImportResult) -> list[RemoteFile]:
    """Matching files whose size and time did not change across two listings ``settle_seconds`` apart: a file
    still being written is left for the next run rather than read half-written."""
    listed = [remote for remote in sftp.list_files(options.remote_dir) if fnmatchcase(remote.name, options.pattern)]
    if not listed or options.settle_seconds == 0:
        return listed
    time.sleep(options.settle_seconds)
    again = {remote.name: remote for remote in sftp.list_files(options.remote_dir)}
    settled = [remote for remote in listed if again.get(remote.name) == remote]
    result.waiting_files = len(listed) - len(settled)
    return settled


def _import_file(context: JobContext, options: ImportOptions, fmt: ImportFormat, sftp: SftpSession,
                 remote: RemoteFile, source: _Source, result: ImportResult) -> None:
    store = context.store
    with tempfile.TemporaryDirectory(prefix="casebridge-import-") as folder:
        local = Path(folder) / "file.csv"
        with local.open("wb") as out:
            sha256 = sftp.download(options.remote_dir, remote.name, out)
        size = local.stat().st_size
        file_id, state = _ledger_entry(store, source, options, size, sha256)
        if state in ("processed", "archived", "rejected"):
            _archive(store, sftp, options, remote.name, file_id if state == "processed" else None)
            result.skipped_files += 1
            log.info("batch.import.already_processed", target=source.target, file=remote.name)
            return
        try:
            rows, failures = _take_in(context, fmt, local, source, sha256, datetime.fromtimestamp(remote.mtime, UTC),
                                      options.chunk_rows)
        except FileRefused as exc:
            _finish(store, file_id, "refused", 0, 0, str(exc))
            result.refused[remote.name] = str(exc)
            log.error("batch.import.file_refused", target=source.target, file=remote.name, error=str(exc))
            return
        except BatchError as exc:
            _record_failures(store, source, [(Row(1), RowError("batch_unreadable_file", str(exc)))],
                             row_id(source.target, sha256, 0))
            _finish(store, file_id, "rejected", 0, 0, str(exc))
            _archive(store, sftp, options, remote.name, None, folder="failed")
            result.rejected_files += 1
            result.failures += 1
            return
        _finish(store, file_id, "processed", rows, failures, None)
        _archive(store, sftp, options, remote.name, file_id)
        result.files += 1
        result.rows += rows
        result.failures += failures


def _ledger_entry(store: Store, source: _Source, options: ImportOptions, size: int, sha256: str) -> tuple[int, str]:
    """The file's ledger row (created as ``processing`` if it is new) and its state."""
    with store.transaction() as session:
        found = session.scalar(select(BatchFile).where(
            BatchFile.target == source.target, BatchFile.direction == "import", BatchFile.name == source.file,
            BatchFile.size == size, BatchFile.sha256 == sha256).order_by(BatchFile.id.desc()).limit(1))
        if found is not None:
            return found.id, found.state
        file = BatchFile(schedule=source.schedule, target=source.target, direction="import", name=source.file,
                         remote_dir=options.remote_dir, state="processing", size=size, sha256=sha256, rows=0,
                         failed_rows=0, created_at=utc_now())
        session.add(file)
        session.flush()
        return file.id, file.state


def _take_in(context: JobContext, fmt: ImportFormat, local: Path, source: _Source, sha256: str,
             file_time: datetime, chunk_rows: int) -> tuple[int, int]:
    mapper = RowMapper(source.target, source.system, fmt, sha256, file_time, f"schedule:{source.schedule}")
    rows = failures = 0
    with CsvRows(local, fmt) as reader:
        chunk: list[Row] = []
        for row in reader:
            chunk.append(row)
            if len(chunk) >= chunk_rows:
                done, failed = _take_chunk(context, mapper, source, sha256, chunk)
                rows, failures = rows + done, failures + failed
                chunk = []
                if context.progress is not None:
                    context.progress("rows", rows + failures, None)
        if chunk:
            done, failed = _take_chunk(context, mapper, source, sha256, chunk)
            rows, failures = rows + done, failures + failed
    if context.progress is not None:
        context.progress("rows", rows + failures, rows + failures)
    return rows, failures


def _take_chunk(context: JobContext, mapper: RowMapper, source: _Source, sha256: str,
                chunk: list[Row]) -> tuple[int, int]:
    store, intake = context.store, context.intake
    with store.read() as session:
        plan = mapper.plan(session, chunk)
    submitted = [item for item in plan.planned if item.submission is not None]
    outcomes = _accept(intake, [item.submission for item in submitted if item.submission is not None])
    references: list[tuple[str, str]] = [item.reference for item in plan.planned
                                         if item.reference is not None and item.submission is None]
    by_line = {row.line: row for row in chunk}
    for item, outcome in zip(submitted, outcomes, strict=True):
        if isinstance(outcome, IntakeRejected):
            plan.failed.append((by_line[item.line], RowError("batch_rejected", f"{outcome.field}: {outcome.message}")))
            continue
        if item.reference is not None:
            references.append(item.reference)
        if item.new_case_ref is not None and not outcome.duplicate:
            references.append((outcome.case_pk, item.new_case_ref))
    _record_references(store, source.target, references)
    for row, error in sorted(plan.failed, key=lambda pair: pair[0].line):
        _record_failures(store, source, [(row, error)], row_id(source.target, sha256, row.line))
    return len(chunk) - len(plan.failed), len(plan.failed)


def _accept(intake: Intake, submissions: list[Any]) -> list[Any]:
    return intake.accept_many(submissions) if submissions else []


def _record_references(store: Store, target: str, references: list[tuple[str, str]]) -> None:
    """The LOB system's reference for each case, for this target (the newest wins)."""
    if references:
        with store.transaction() as session:
            remember_references(session, {(case_pk, target): reference for case_pk, reference in references},
                                utc_now())


def _record_failures(store: Store, source: _Source, failed: list[tuple[Row, RowError]], failure_id: uuid.UUID) -> int:
    """Put bad rows in the failed-message store, once each (a re-read file does not record them again)."""
    now = utc_now()
    with store.transaction() as session:
        if session.scalar(select(FailedMessage.id).where(FailedMessage.event_id == str(failure_id))) is not None:
            return 0
        for row, error in failed:
            where = f"{source.file} line {row.line}" if row.line else source.file
            session.add(FailedMessage(
                stage="intake", event_id=str(failure_id), target=source.target, error_class="invalid",
                reason=error.reason[:100], error_text=f"{where}: {error.message}"[:4000],
                raw_body=row.raw.encode("utf-8"), attempts=1, first_failed_at=now, last_failed_at=now,
            ))
            session.execute(insert(AuditEntry).values(
                event_id=str(failure_id), target=source.target, step="refused", actor=f"schedule:{source.schedule}",
                detail={"file": source.file, "line": row.line, "reason": error.reason}, at=now,
            ))
        return len(failed)


def _finish(store: Store, file_id: int, state: str, rows: int, failures: int, error: str | None) -> None:
    with store.transaction() as session:
        session.execute(update(BatchFile).where(BatchFile.id == file_id).values(
            state=state, rows=rows, failed_rows=failures, error=error, completed_at=utc_now()))


def _archive(store: Store, sftp: SftpSession, options: ImportOptions, name: str, file_id: int | None,
             folder: str | None = None) -> None:
    target_dir = f"{options.remote_dir.rstrip('/')}/{folder}" if folder else options.archive
    sftp.move(options.remote_dir, name, target_dir)
    if file_id is not None:
        with store.transaction() as session:
            session.execute(update(BatchFile).where(BatchFile.id == file_id).values(state="archived"))
