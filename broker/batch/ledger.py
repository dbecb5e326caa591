"""Schedule leases in the store, so only one process runs a schedule at a time.

A lease is a row per schedule with its holder and expiry. Taking it is one conditional statement (insert, or take
over an expired lease), so two scheduler processes racing for the same schedule cannot both win. A run that
crashes leaves its lease to expire; the next run takes it over and recovers whatever the crashed one left.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import ScheduleLock


def new_holder() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire_lock(store: Store, schedule: str, holder: str, lease: timedelta) -> bool:
    """Take the schedule's lease for ``holder``; False if another holder's lease is still running."""
    now = utc_now()
    try:
        with store.transaction() as session:
            session.execute(insert(ScheduleLock).values(schedule=schedule, holder=holder, acquired_at=now,
                                                        expires_at=now + lease))
        return True
    except IntegrityError:
        pass
    with store.transaction() as session:
        taken = session.execute(
            update(ScheduleLock)
            .where(ScheduleLock.schedule == schedule, ScheduleLock.expires_at < now)
            .values(holder=holder, acquired_at=now, expires_at=now + lease)
        )
        return bool(taken.rowcount)  # type: ignore[attr-defined]


def renew_lock(store: Store, schedule: str, holder: str, lease: timedelta) -> bool:
    """Extend ``holder``'s lease; False if it has lost it."""
    with store.transaction() as session:
        renewed = session.execute(update(ScheduleLock)
                                  .where(ScheduleLock.schedule == schedule, ScheduleLock.holder == holder)
                                  .values(expires_at=utc_now() + lease))
        return bool(renewed.rowcount)  # type: ignore[attr-defined]


def release_lock(store: Store, schedule: str, holder: str) -> None:
    with store.transaction() as session:
        session.execute(delete(ScheduleLock).where(ScheduleLock.schedule == schedule, ScheduleLock.holder == holder))


def lock_holder(store: Store, schedule: str) -> tuple[str, datetime] | None:
    with store.read() as session:
        lock = session.get(ScheduleLock, schedule)
        return (lock.holder, lock.expires_at) if lock else None
