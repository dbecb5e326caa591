"""The store's tables. The store is the system of record; queues only carry pointers into it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table(model: type[Base]) -> Table:
    """The Core table behind a mapped class: bulk inserts through it skip the ORM's per-row bookkeeping."""
    return Base.metadata.tables[model.__tablename__]


class ApiKey(Base):
    """A client system's API key. Only the SHA-256 of the key is kept; the key is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(64), index=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class CaseRecord(Base):
    """A case as Casebridge knows it: identity, current status and the latest canonical snapshot."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("source", "case_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[str] = mapped_column(String(100), index=True)
    service_code: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(40))
    snapshot: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    personal_data_purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, doc=(
        "When the retention policy removed the case's personal data (it stays closed and counted)."
    ))


class EventRecord(Base):
    """The inbox: every accepted event, keyed by its event_id (the idempotency key)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "idempotency_key"),
        UniqueConstraint("case_pk", "sequence"),
        # Open311's servicerequestupdates lists what was recorded in a window, every few minutes.
        Index("ix_events_received_at", "received_at"),
    )

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_pk: Mapped[str] = mapped_column(ForeignKey("cases.id"))
    sequence: Mapped[int] = mapped_column(Integer, doc="Order of acceptance within the case, from 1.")
    event_type: Mapped[str] = mapped_column(String(40))
    schema_version: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(64))
    correlation_id: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    received_via: Mapped[str] = mapped_column(String(10))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)


class DeliveryRecord(Base):
    """One event to one target. Unique per (target, event_id): this row is also the idempotency ledger."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("target", "event_id"),
        Index("ix_deliveries_state_target", "state", "target"),
        Index("ix_deliveries_case_target_sequence", "case_pk", "target", "sequence"),
        # Only retries wait for a time: the other states leave this index alone when a delivery moves on.
        Index("ix_deliveries_retry_due", "next_attempt_at", postgresql_where=text("state = 'retrying'"),
              sqlite_where=text("state = 'retrying'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.event_id"))
    #: Looked up by ``ix_deliveries_case_target_sequence``, which leads with it.
    case_pk: Mapped[str] = mapped_column(ForeignKey("cases.id"))
    target: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(20), doc=(
        "pending, waiting (for an earlier event of the case), in_flight (a worker is calling the target), "
        "retrying (until next_attempt_at), unconfirmed (a create that may have landed, which the target could "
        "not confirm: waiting for reconciliation), delivered, failed, discarded, or batch_pending."
    ))
    sequence: Mapped[int] = mapped_column(Integer, default=1, doc="The event's sequence within its case.")
    attempts: Mapped[int] = mapped_column(Integer, default=0, doc=(
        "Attempts started (counted when each starts, not when its outcome is recorded)."
    ))
    may_have_landed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), doc=(
        "An attempt that may have taken effect at the target was started and no look-up has since shown that "
        "it did not: the next attempt asks the target first. Never cleared by a retry, a take-over or a replay."
    ))
    deferrals: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"), doc=(
        "Times the delivery was put back to wait (a retry through the queue, a failed look-up, an open circuit): "
        "each wait is longer than the last, up to the policy's longest."
    ))
    claimed_by: Mapped[str | None] = mapped_column(String(64), doc=(
        "The worker that last took the delivery in flight: a redelivered pointer waits while that worker lives."
    ))
    external_ref: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ExternalRef(Base):
    """The LOB system's reference for a case, per target."""

    __tablename__ = "external_refs"
    __table_args__ = (Index("ix_external_refs_reference", "target", "reference"),)

    case_pk: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    reference: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class AuditEntry(Base):
    """One step in a message's life. Append-only: nothing updates or deletes these rows."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_pk: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), index=True)
    event_id: Mapped[str | None] = mapped_column(String(36), index=True)
    target: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class OutboxMessage(Base):
    """A delivery pointer to publish, written in the same transaction as the delivery it announces.

    It names the target; the outbox relay alone knows which exchange and queue that is.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    #: Handed straight to the writing process's relay as the transaction commits: no relay takes the row before
    #: then, and if that process dies before its relay has published it, any relay takes it afterwards.
    reserved_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


def _cause_of(context: DefaultExecutionContext) -> str:
    from broker.failures.causes import normalise_error

    parameters: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return normalise_error(str(parameters.get("error_text") or ""))


#: A refused event not (yet) linked to a case: it came before its case and its hold ran out.
UNLINKED_REFUSAL = "stage = 'intake' AND state = 'open' AND case_pk IS NULL"


class FailedMessage(Base):
    """A message that could not be processed or delivered, kept with the reason so it can be fixed."""

    __tablename__ = "failed_messages"
    __table_args__ = (
        Index("ix_failed_messages_state_last_failed_at", "state", "last_failed_at", "id"),
        # Covers the group query (counts, first and last failure per cause) without touching the rows.
        Index("ix_failed_messages_cause", "state", "target", "error_class", "reason", "cause", "first_failed_at",
              "last_failed_at"),
        # Every case created asks whether events of it were refused before it came: only those rows are indexed.
        Index("ix_failed_messages_before_case", "source", "case_ref", postgresql_where=text(UNLINKED_REFUSAL),
              sqlite_where=text(UNLINKED_REFUSAL)),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    stage: Mapped[str] = mapped_column(String(20), doc="intake or delivery")
    event_id: Mapped[str | None] = mapped_column(String(36), index=True)
    case_pk: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), index=True)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))
    target: Mapped[str | None] = mapped_column(String(64))
    error_class: Mapped[str] = mapped_column(String(20), doc="permanent, transient or invalid")
    reason: Mapped[str] = mapped_column(String(100))
    error_text: Mapped[str] = mapped_column(Text)
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary().with_variant(sqlite.BLOB(), "sqlite"))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    last_failed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    state: Mapped[str] = mapped_column(String(20), default="open",
                                       doc="open, replayed, linked (to a LOB record) or discarded")
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolution_note: Mapped[str | None] = mapped_column(Text)
    cause: Mapped[str] = mapped_column(String(200), default=_cause_of, doc=(
        "The error text with its particulars (numbers, ids, quoted values) blanked out: failures that share "
        "target, error class, reason and cause are one group on the console."
    ))
    source: Mapped[str | None] = mapped_column(String(64), doc="The sending system, where the envelope said.")
    case_ref: Mapped[str | None] = mapped_column(String(100), doc=(
        "The sender's case id, where the envelope said: a case created later is linked to its refused events."
    ))


class HeldEvent(Base):
    """A follow-up event that arrived before its case: held back, not refused, until the case arrives.

    Taken in right after the case's ``case.created`` (in the order the follow-ups arrived); failed with the
    reason, and linked into the case's history should it come later, once ``expires_at`` passes.
    """

    __tablename__ = "held_events"
    __table_args__ = (Index("ix_held_events_source_case_ref", "source", "case_ref"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    case_ref: Mapped[str] = mapped_column(String(100))
    via: Mapped[str] = mapped_column(String(10))
    actor: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary().with_variant(sqlite.BLOB(), "sqlite"))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class TargetCircuit(Base):
    """A target's circuit breaker, as the workers last saw it: shown by ``broker status``."""

    __tablename__ = "target_circuits"

    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), doc="closed (calls flow), open (paused) or half_open (probing)")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class PollMark(Base):
    """How far a target's LOB status changes have been read (the high-water mark of its polling)."""

    __tablename__ = "poll_marks"

    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    polled_until: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class LobUpdate(Base):
    """Every LOB status change already turned into an event: overlapping polls never report one twice."""

    __tablename__ = "lob_updates"

    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    update_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str | None] = mapped_column(String(36))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class WorkerHeartbeat(Base):
    """A worker process that is alive, as long as it keeps ``beat_at`` fresh.

    A delivery left ``in_flight`` by a worker whose heartbeat has gone stale is resumed by another worker; one
    whose worker still beats is left alone, even when the queue hands its pointer out again (the worker's AMQP
    connection may have dropped while it was still calling the target).
    """

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    beat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class BatchFile(Base):
    """One CSV file a batch schedule exported or imported: the ledger that stops a file being done twice.

    An export is recorded as ``uploading`` (with its deliveries, in ``batch_file_deliveries``) before anything is
    sent, and becomes ``uploaded`` in the same transaction that marks those deliveries delivered. An import is
    keyed by name, size and SHA-256, so the same file offered again is recognised and skipped.
    """

    __tablename__ = "batch_files"
    __table_args__ = (
        Index("ix_batch_files_schedule_state", "schedule", "state"),
        Index("ix_batch_files_identity", "target", "direction", "name", "size", "sha256"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(10), doc="export or import")
    name: Mapped[str] = mapped_column(String(255), doc="The file's name in its remote directory.")
    remote_dir: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(20), doc=(
        "export: uploading, uploaded or abandoned; import: processing, processed or archived."
    ))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer, default=0)
    failed_rows: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BatchFileDelivery(Base):
    """Which deliveries an exported file carries (claimed before the upload, released if it fails)."""

    __tablename__ = "batch_file_deliveries"

    file_id: Mapped[int] = mapped_column(ForeignKey("batch_files.id"), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), primary_key=True, index=True)


class ScheduleLock(Base):
    """A lease on a schedule: only its holder runs it until it expires (so a crashed run is taken over)."""

    __tablename__ = "schedule_locks"

    schedule: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ScheduleFiring(Base):
    """A schedule's cron time, claimed by the one scheduler that runs it: however many schedulers are up (or
    ``broker run`` processes), each firing runs once; the others find it taken and leave it."""

    __tablename__ = "schedule_firings"

    schedule: Mapped[str] = mapped_column(String(64), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(100))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class ScheduleRun(Base):
    """One run of a batch schedule and how it went, for ``broker batch list``."""

    __tablename__ = "schedule_runs"
    __table_args__ = (Index("ix_schedule_runs_schedule_started", "schedule", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(20), doc="running, succeeded, failed or skipped (locked)")
    summary: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class ConsoleUser(Base):
    """A support officer's console account. Only an argon2 hash of the password is kept."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20), doc="viewer (read), operator (replay, edit, discard) or admin")
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is kept here."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SignInFailure(Base):
    """A refused sign-in, counted to slow down password guessing (per account name and per address)."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_name_at", "name", "at"),
                      Index("ix_sign_in_failures_address_at", "address", "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class MessageEdit(Base):
    """A correction made before a replay: the message as it was, as it was changed to, and the difference."""

    __tablename__ = "message_edits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    failed_id: Mapped[int] = mapped_column(ForeignKey("failed_messages.id"), index=True)
    edited_by: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    original: Mapped[dict[str, Any]] = mapped_column(Json)
    edited: Mapped[dict[str, Any]] = mapped_column(Json)
    diff: Mapped[list[Any]] = mapped_column(Json)


class ReplayJob(Base):
    """A bulk replay run in rate-limited batches on a background thread; its progress survives a page reload."""

    __tablename__ = "replay_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    description: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(20), doc="running, cancelling, cancelled or finished")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    batch_size: Mapped[int] = mapped_column(Integer)
    pause_seconds: Mapped[float] = mapped_column(Float)
    targets: Mapped[list[Any]] = mapped_column(Json, default=list)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ReplayJobItem(Base):
    """One failed message in a bulk replay, and the delivery it was sent through again (to follow its outcome)."""

    __tablename__ = "replay_job_items"
    __table_args__ = (Index("ix_replay_job_items_job_state", "job_id", "state"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("replay_jobs.id"), primary_key=True)
    failed_id: Mapped[int] = mapped_column(ForeignKey("failed_messages.id"), primary_key=True)
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    state: Mapped[str] = mapped_column(String(20), default="waiting", doc="waiting, queued or refused")
    note: Mapped[str | None] = mapped_column(String(500))
