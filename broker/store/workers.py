"""Worker liveness: each worker process keeps a heartbeat row fresh while it runs.

A delivery's claim names the worker that took it in flight. When the queue hands the delivery's pointer to
another worker (the first one's AMQP connection dropped, or the process died), the new worker resumes the
delivery only once the holder's heartbeat has gone stale; while the holder still beats it may be in the middle
of a slow call to the target, and calling again could create the case twice.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import WorkerHeartbeat

#: How often a worker renews its heartbeat.
BEAT_SECONDS = 2.0
#: A heartbeat older than this means the worker is gone: five missed beats, so a busy database is no false alarm.
STALE_AFTER = timedelta(seconds=10)


def new_worker_id() -> str:
    """A name unique to this process, readable in the store: host, pid and a random suffix."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def beat(store: Store, worker_id: str) -> None:
    """Record that the worker is alive now (creating its row on the first beat)."""
    now = utc_now()
    with store.transaction() as session:
        renewed = session.execute(
            update(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id).values(beat_at=now)
        )
        if not renewed.rowcount:  # type: ignore[attr-defined]
            session.add(WorkerHeartbeat(worker_id=worker_id, host=socket.gethostname()[:200], pid=os.getpid(),
                                        started_at=now, beat_at=now))


def forget(store: Store, worker_id: str) -> None:
    """A worker that stops cleanly says so, so its deliveries need not wait for its heartbeat to go stale."""
    with store.transaction() as session:
        session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id))


def live_workers(session: Session, worker_ids: set[str], now: datetime) -> set[str]:
    """Those of ``worker_ids`` whose heartbeat is fresh."""
    if not worker_ids:
        return set()
    return set(session.scalars(
        select(WorkerHeartbeat.worker_id).where(WorkerHeartbeat.worker_id.in_(worker_ids),
                                                WorkerHeartbeat.beat_at > now - STALE_AFTER)
    ))
