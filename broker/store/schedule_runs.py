"""The last run of each schedule, kept for the console's dashboard."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from broker.logging import describe_error
from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import ScheduleRun

log = structlog.get_logger("casebridge.scheduler")


def record_run(store: Store, name: str, started: datetime, outcome: str, summary: str) -> None:
    """Upsert the schedule's last run; never lets a failure here stop the scheduler."""
    values = {"name": name, "started_at": started, "finished_at": utc_now(), "outcome": outcome,
              "summary": summary[:500]}
    try:
        with store.transaction() as session:
            insert = postgresql_insert if store.is_postgres else sqlite_insert
            statement = insert(ScheduleRun).values(**values)
            session.execute(statement.on_conflict_do_update(
                index_elements=["name"], set_={k: v for k, v in values.items() if k != "name"}))
    except Exception as exc:
        log.warning("schedule.run_not_recorded", schedule=name, error=describe_error(exc))
