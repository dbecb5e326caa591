"""``broker status``: is every target healthy, and is anything piling up?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func, select, text

from broker.config.loader import Configuration
from broker.model.events import utc_now
from broker.settings import Settings
from broker.store.database import Store
from broker.store.tables import DeliveryRecord, FailedMessage, OutboxMessage, ScheduleRun, TargetCircuit
from broker.transport.inspect import queue_depths


class TargetStatus(BaseModel):
    target: str
    circuit: str
    consecutive_failures: int = 0
    paused_until: datetime | None = None
    last_error: str | None = None
    deliveries: dict[str, int]
    open_failures: int
    queued_messages: int | None = None
    consumers: int | None = None


class BrokerStatus(BaseModel):
    targets: list[TargetStatus]
    outbox_backlog: int
    intake_queue: int | None = None
    store_bytes: int = 0
    store_limit_bytes: int | None = None
    store_warning: str | None = None


def broker_status(settings: Settings, configuration: Configuration, store: Store) -> BrokerStatus:
    with store.read() as session:
        circuits = {row.target: row for row in session.scalars(select(TargetCircuit))}
        counts: dict[str, dict[str, int]] = {}
        for target, state, count in session.execute(
            select(DeliveryRecord.target, DeliveryRecord.state, func.count())
            .group_by(DeliveryRecord.target, DeliveryRecord.state)
        ):
            counts.setdefault(target, {})[state] = count
        failed = dict(session.execute(
            select(FailedMessage.target, func.count()).where(FailedMessage.state == "open")
            .group_by(FailedMessage.target)
        ).tuples().all())
        backlog = session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
    depths = queue_depths(settings, sorted(configuration.targets))
    targets = []
    for name in sorted(configuration.targets):
        circuit = circuits.get(name)
        queued = depths.get(name)
        targets.append(TargetStatus(
            target=name, circuit=circuit.state if circuit else "closed",
            consecutive_failures=circuit.consecutive_failures if circuit else 0,
            paused_until=circuit.retry_at if circuit and circuit.state == "open" else None,
            last_error=circuit.last_error if circuit and circuit.state != "closed" else None,
            deliveries=counts.get(name, {}), open_failures=failed.get(name, 0),
            queued_messages=queued[0] if queued else None, consumers=queued[1] if queued else None,
        ))
    intake = depths.get("")
    size = store_size(store)
    return BrokerStatus(targets=targets, outbox_backlog=backlog, intake_queue=intake[0] if intake else None,
                        store_bytes=size, store_limit_bytes=settings.store_size_limit_bytes,
                        store_warning=size_warning(size, settings.store_size_limit_bytes))


def size_warning(size: int, limit: int | None) -> str | None:
    """A warning once the store reaches 80% of its limit: time to look at the retention settings or the disk."""
    if not limit or size < 0.8 * limit:
        return None
    return (f"the store is at {size / limit:.0%} of its limit ({size / 1_048_576:,.0f} of {limit / 1_048_576:,.0f} "
            "MB): shorten the retention (CASEBRIDGE_RETENTION_*), check that the retention schedule runs, or give "
            "it room")


@dataclass(frozen=True)
class StoreGauges:
    """The store's state as the metrics report it."""

    failed_open: dict[tuple[str, str], int]
    circuits: dict[str, str]
    outbox_backlog: int
    outbox_oldest_seconds: float
    store_bytes: float
    last_success: dict[str, float]


def store_gauges(store: Store, targets: Sequence[str], *, top_causes: int = 20) -> StoreGauges:
    """Open failures by target and cause (the biggest causes of each target; the rest as ``other``), circuits,
    the outbox backlog and its oldest row's age, the store's size, and each schedule's last success."""
    now = utc_now()
    with store.read() as session:
        per_target: dict[str, list[tuple[str, int]]] = {}
        for target, cause, count in session.execute(
            select(FailedMessage.target, FailedMessage.cause, func.count()).where(FailedMessage.state == "open")
            .group_by(FailedMessage.target, FailedMessage.cause)
        ):
            per_target.setdefault(target or "(intake)", []).append((cause, count))
        failed: dict[tuple[str, str], int] = {}
        for target, causes in per_target.items():
            causes.sort(key=lambda item: -item[1])
            for cause, count in causes[:top_causes]:
                failed[(target, cause)] = count
            if len(causes) > top_causes:
                failed[(target, "other")] = sum(count for _, count in causes[top_causes:])
        circuits: dict[str, str] = {row.target: row.state for row in session.execute(
            select(TargetCircuit.target, TargetCircuit.state))}
        backlog, oldest = session.execute(
            select(func.count(), func.min(OutboxMessage.created_at)).select_from(OutboxMessage)).one()
        successes = {row[0]: row[1] for row in session.execute(
            select(ScheduleRun.schedule, func.max(ScheduleRun.finished_at))
            .where(ScheduleRun.outcome == "succeeded").group_by(ScheduleRun.schedule))}
    oldest_at = _aware(oldest)
    return StoreGauges(
        failed_open=failed, circuits={target: circuits.get(target, "closed") for target in targets},
        outbox_backlog=int(backlog or 0),
        outbox_oldest_seconds=max(0.0, (now - oldest_at).total_seconds()) if oldest_at else 0.0,
        store_bytes=float(store_size(store)),
        last_success={schedule: at.timestamp() for schedule, at in
                      ((name, _aware(value)) for name, value in successes.items()) if at is not None},
    )


def store_size(store: Store) -> int:
    """The store's size on disk, in bytes (the database's, on PostgreSQL; the file's, on SQLite)."""
    if store.is_postgres:
        with store.read() as session:
            return int(session.scalar(text("SELECT pg_database_size(current_database())")) or 0)
    path = store.engine.url.database
    if not path or path == ":memory:":
        return 0
    return sum(Path(f"{path}{suffix}").stat().st_size for suffix in ("", "-wal")
               if Path(f"{path}{suffix}").exists())


def _aware(moment: datetime | str | None) -> datetime | None:
    """SQLite's aggregates hand back naive (UTC) times, or their text."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
