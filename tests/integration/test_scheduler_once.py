"""However many schedulers are up, each firing runs once; a firing missed while none was up runs once when one
starts, and ``broker batch list`` says so."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import func, select
from support.harness import write_mappings
from support.processes import BrokerProcess, broker_env, run_broker
from support.receiver import WebhookReceiver
from support.services import postgres_database

from broker.store.database import Store
from broker.store.tables import ScheduleFiring, ScheduleRun

#: Hourly at :00, so one firing was missed by any scheduler started now; within the grace, so it is caught up.
SCHEDULE = """\
name: sweep
cron: "0 * * * *"
timezone: Europe/London
job: deliveries.requeue_stale
misfire_grace_minutes: 120
"""


def test_three_schedulers_run_a_missed_firing_once_and_batch_list_shows_it(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    (schedules / "sweep.yaml").write_text(SCHEDULE)
    with postgres_database(migrated=True) as database_url:
        env = broker_env(database_url=database_url, amqp_url="memory://",
                         mappings_dir=str(write_mappings(tmp_path / "mappings", receiver.url)),
                         schedules_dir=str(schedules))
        schedulers = [BrokerProcess("scheduler", env=env, cwd=tmp_path, name=f"scheduler-{n}") for n in range(3)]
        store = Store(database_url)
        try:
            for scheduler in schedulers:
                scheduler.wait_for_output('"scheduler.started"')
            deadline = time.monotonic() + 30
            while _runs(store) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)  # time for a second run, if there were to be one
            assert _runs(store) == 1
            with store.read() as session:
                assert session.scalar(select(func.count()).select_from(ScheduleFiring)) == 1
            outputs = "".join(scheduler.output() for scheduler in schedulers)
            assert outputs.count('"schedule.missed"') >= 1 and outputs.count('"schedule.ran"') == 1
        finally:
            for scheduler in schedulers:
                assert scheduler.terminate() == 0, scheduler.output()
            store.dispose()
        listed = run_broker("batch", "list", env={**env, "COLUMNS": "300"}, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "missed while no scheduler was up" in listed.stdout


def _runs(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(ScheduleRun)
                                  .where(ScheduleRun.schedule == "sweep")) or 0)
