"""``broker status``: is every target healthy, and is anything piling up?"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select

from broker.config.loader import Configuration
from broker.settings import Settings
from broker.store.database import Store
from broker.store.tables import DeliveryRecord, FailedMessage, OutboxMessage, TargetCircuit
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
    return BrokerStatus(targets=targets, outbox_backlog=backlog, intake_queue=intake[0] if intake else None)
