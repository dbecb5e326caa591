"""Operating batch schedules: one runner at a time, run records, `broker batch run|list`, `broker check`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, update
from support.batch import EXPORT_OPTIONS, IMPORT_OPTIONS, KEY_ENV, TARGET, BatchWorld, batch_world
from support.processes import broker_env, run_broker

from broker.batch.csv_export import neutralise
from broker.batch.errors import UnsafeRemoteName
from broker.batch.ledger import acquire_lock
from broker.batch.names import check_name
from broker.config.check import check_all
from broker.model.events import utc_now
from broker.scheduling.jobs import JOBS
from broker.scheduling.scheduler import Scheduler
from broker.scheduling.schedules import Schedule
from broker.store.schedule_runs import last_runs
from broker.store.tables import AuditEntry, BatchFile, ScheduleLock


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchWorld]:
    with batch_world(tmp_path, f"sqlite:///{tmp_path / 'casebridge.db'}", monkeypatch) as running:
        yield running


def write_schedule(world: BatchWorld, name: str, job: str, options: dict[str, Any]) -> None:
    (world.settings.schedules_dir / f"{name}.yaml").write_text(yaml.safe_dump(
        {"name": name, "cron": "*/30 * * * *", "timezone": "Europe/London", "job": job, "options": options}))


@pytest.mark.parametrize("name", ["../x.csv", "..", "/etc/passwd", "a\\b.csv", ".hidden.csv", "a\nb.csv", ""])
def test_names_that_are_paths_or_hidden_are_refused(name: str) -> None:
    with pytest.raises(UnsafeRemoteName):
        check_name(name)


@pytest.mark.parametrize(("cell", "written"), [
    ("=1+2", "'=1+2"), ("+44 20 7946 0000", "'+44 20 7946 0000"), ("-5", "'-5"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=cmd", "'\t=cmd"), ("Flat 2, 12 High St", "Flat 2, 12 High St"), ("", ""),
])
def test_cells_a_spreadsheet_would_evaluate_are_neutralised(cell: str, written: str) -> None:
    assert neutralise(cell) == written


def test_a_schedule_held_by_another_process_is_skipped_until_its_lease_runs_out(world: BatchWorld) -> None:
    world.seed_cases(5)
    assert acquire_lock(world.store, "waste-export", "other-host:1", timedelta(minutes=10))

    skipped = JOBS["batch.export"](world.context(), EXPORT_OPTIONS)

    assert "skipped" in skipped and world.listing("outbound") == []
    assert world.delivery_states() == {"batch_pending": 5}
    with world.store.transaction() as session:  # the other process died; its lease runs out
        session.execute(update(ScheduleLock).values(expires_at=utc_now() - timedelta(seconds=1)))

    summary = JOBS["batch.export"](world.context(), EXPORT_OPTIONS)

    assert summary["rows"] == 5
    with world.store.read() as session:
        assert session.scalar(select(func.count()).select_from(ScheduleLock)) == 0  # released after the run
    assert last_runs(world.store)["waste-export"].outcome == "succeeded"


def test_two_schedulers_running_the_same_schedule_at_once_export_each_case_once(world: BatchWorld) -> None:
    world.seed_cases(600)
    results: list[dict[str, Any]] = []
    start = threading.Barrier(2)

    def scheduler_process() -> None:
        start.wait()
        results.append(JOBS["batch.export"](world.context(), EXPORT_OPTIONS))

    threads = [threading.Thread(target=scheduler_process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sum(result.get("rows", 0) for result in results) == 600
    assert len(world.listing("outbound")) == 1
    assert world.delivery_states() == {"delivered": 600}
    with world.store.read() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.step == "delivered")) == 600
        assert session.scalar(select(func.count()).select_from(BatchFile)) == 1


def test_the_scheduler_runs_batch_jobs_under_the_schedules_name(world: BatchWorld) -> None:
    world.seed_cases(3)
    schedule = Schedule(name="nightly-waste", cron="30 1 * * *", job="batch.export", options=EXPORT_OPTIONS)
    scheduler = Scheduler(world.context(schedule=None), [schedule], stop=threading.Event())

    result = scheduler.run_now(schedule)

    assert result["rows"] == 3
    run = last_runs(world.store)["nightly-waste"]
    assert run.outcome == "succeeded" and run.summary["rows"] == 3 and run.finished_at is not None
    with world.store.read() as session:
        assert session.scalars(select(BatchFile.schedule)).one() == "nightly-waste"


def test_broker_batch_run_and_list(world: BatchWorld, tmp_path: Path) -> None:
    world.seed_cases(40)
    write_schedule(world, "waste-export", "batch.export", EXPORT_OPTIONS)
    write_schedule(world, "waste-import", "batch.import", IMPORT_OPTIONS)
    env = broker_env(database_url=world.settings.database_url, amqp_url="memory://",
                     mappings_dir=str(world.settings.mappings_dir), schedules_dir=str(world.settings.schedules_dir))
    env[KEY_ENV] = str(world.server.user_key)

    ran = run_broker("batch", "run", "waste-export", env=env, cwd=tmp_path)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "rows" in ran.stdout and " 40 " in ran.stdout and "files" in ran.stdout and "failures" in ran.stdout
    assert "waste-export: rows" in ran.stderr or "waste-export: bytes" in ran.stderr  # the progress bar
    assert world.delivery_states() == {"delivered": 40}

    listed = run_broker("batch", "list", env={**env, "COLUMNS": "250"}, cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[1]: line for line in listed.stdout.splitlines() if "waste-" in line}
    assert "succeeded" in lines["waste-export"] and "40 rows" in lines["waste-export"]
    assert "never" in lines["waste-import"]
    assert "GMT" in lines["waste-export"] or "BST" in lines["waste-export"]  # next run, in UK time

    missing = run_broker("batch", "run", "no-such-schedule", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "waste-export" in missing.stderr

    world.put("CSVEXP_01.CSV", b"not,a,result\r\nfile,at,all\r\n")
    failed = run_broker("batch", "run", "waste-import", env=env, cwd=tmp_path)
    assert failed.returncode == 0, failed.stderr
    assert "failures" in failed.stdout and "broker failed list" in failed.stdout


def test_an_unreachable_server_fails_the_run_with_a_clear_message(world: BatchWorld, tmp_path: Path) -> None:
    write_schedule(world, "waste-export", "batch.export", EXPORT_OPTIONS)
    world.server.stop()
    env = broker_env(database_url=world.settings.database_url, amqp_url="memory://",
                     mappings_dir=str(world.settings.mappings_dir), schedules_dir=str(world.settings.schedules_dir))
    env[KEY_ENV] = str(world.server.user_key)

    ran = run_broker("batch", "run", "waste-export", env=env, cwd=tmp_path)

    assert ran.returncode == 1
    assert "cannot reach SFTP server 127.0.0.1" in ran.stderr and "Traceback" not in ran.stderr
    assert last_runs(world.store)["waste-export"].outcome == "failed"


def test_check_reports_bad_batch_options_and_formats_with_file_and_line(world: BatchWorld) -> None:
    schedules = world.settings.schedules_dir
    (schedules / "export.yaml").write_text(
        "name: waste-export\ncron: '30 1 * * *'\njob: batch.export\noptions:\n"
        "  target: waste-contractor\n  remote_dir: outbound\n  file_name: ../escape.csv\n  colour: blue\n")
    (schedules / "import.yaml").write_text(
        "name: waste-import\ncron: '*/30 * * * *'\njob: batch.import\noptions:\n"
        "  target: nowhere\n  remote_dir: inbound\n")
    mapping = world.settings.mappings_dir / f"{TARGET}.yaml"
    mapping.write_text(mapping.read_text().replace("encoding: auto", "encoding: klingon\n    timezone: Mars/Olympus")
                       .replace("    key_path_env: CASEBRIDGE_TEST_SFTP_KEY\n", ""))

    problems = {(Path(problem.file).name, problem.line, problem.message)
                for problem in check_all(world.settings.mappings_dir, schedules)}

    assert any(name == "export.yaml" and line == 7 and "path separator" in message
               for name, line, message in problems)
    assert any(name == "export.yaml" and line == 8 and "colour" in message for name, line, message in problems)
    assert any(name == "import.yaml" and line == 5 and "unknown target 'nowhere'" in message
               for name, line, message in problems)
    mapping_lines = mapping.read_text().splitlines()
    encoding_line = next(number for number, text in enumerate(mapping_lines, 1) if "klingon" in text)
    sftp_line = next(number for number, text in enumerate(mapping_lines, 1) if text.strip() == "sftp:")
    assert any(name == f"{TARGET}.yaml" and line == encoding_line and "unknown encoding 'klingon'" in message
               for name, line, message in problems)
    assert any(name == f"{TARGET}.yaml" and line == encoding_line + 1 and "unknown time zone 'Mars/Olympus'" in message
               for name, line, message in problems)
    assert any(name == f"{TARGET}.yaml" and line == sftp_line and "password_env or key_path_env" in message
               for name, line, message in problems)


def test_a_long_run_renews_its_lease_so_no_other_process_takes_over(world: BatchWorld) -> None:
    world.seed_cases(5)
    seen: list[tuple[str, Any]] = []

    def slow_progress(what: str, done: int, total: int | None) -> None:
        if what == "rows" and not seen:
            time.sleep(1.5)  # longer than the lease below: only renewal keeps it
            with world.store.read() as session:
                lock = session.get(ScheduleLock, "waste-export")
                seen.append((lock.holder, lock.expires_at) if lock else ("", None))
            seen.append(("other", acquire_lock(world.store, "waste-export", "other-host:2", timedelta(minutes=1))))

    summary = JOBS["batch.export"](world.context(progress=slow_progress), {**EXPORT_OPTIONS, "lock_minutes": 0.01})

    assert summary["rows"] == 5
    (holder, expires), (_, other_got_it) = seen
    assert holder and expires is not None and expires > utc_now() - timedelta(seconds=0.1)
    assert other_got_it is False


def test_export_format_follows_the_target_delimiter_line_endings_encoding_and_dates() -> None:
    import io as _io
    from datetime import UTC, datetime

    from broker.batch.config import ExportFormat
    from broker.batch.csv_export import RowWriter

    fmt = ExportFormat.model_validate({
        "encoding": "windows-1252", "delimiter": ";", "line_ending": "lf", "date_format": "%Y-%m-%d %H.%M",
        "columns": [{"header": "Ref", "field": "case_id"},
                    {"header": "When", "field": "occurred_at"},
                    {"header": "Seen", "field": "case.attributes.seen", "date": True},
                    {"header": "Kind", "field": "case.attributes.kind", "codes": {"general": "GEN"},
                     "unmapped": "blank"},
                    {"header": "Note", "field": "case.description"}],
    })
    out = _io.BytesIO()
    writer = RowWriter(out, fmt, fmt.columns)
    writer.header()
    writer.write([{"case_id": "A-1", "occurred_at": datetime(2026, 7, 1, 11, 0, tzinfo=UTC),
                   "case": {"attributes": {"seen": "2026-01-02T09:00:00+00:00", "kind": "general"},
                            "description": "5°C; £20"}},
                  {"case_id": "A-2", "occurred_at": datetime(2026, 12, 1, 11, 0, tzinfo=UTC),
                   "case": {"attributes": {"kind": "recycling"}, "description": "✓ done"}}])
    writer.close()

    assert out.getvalue() == (
        "Ref;When;Seen;Kind;Note\n"
        "A-1;2026-07-01 12.00;2026-01-02 09.00;GEN;\"5°C; £20\"\n"
        "A-2;2026-12-01 11.00;;;? done\n"
    ).encode("windows-1252")


def test_import_reads_another_delimiter_and_date_only_values(tmp_path: Path) -> None:
    from broker.batch.config import ImportFormat
    from broker.batch.csv_import import CsvRows, parse_date

    fmt = ImportFormat.model_validate({"delimiter": ";", "columns": {"case_id": "Ref", "status": "Stage",
                                                                     "occurred_at": "Date"}})
    path = tmp_path / "in.csv"
    path.write_bytes("Ref;Stage;Date\r\nA-1;Done;\"03/04/2026\"\r\n\r\nA-2;\"Half; done\";03/04/2026 17:45\r\n"
                     .encode("cp1252"))

    with CsvRows(path, fmt) as rows:
        read = list(rows)

    assert [(row.line, row.values) for row in read] == [
        (2, {"Ref": "A-1", "Stage": "Done", "Date": "03/04/2026"}),
        (4, {"Ref": "A-2", "Stage": "Half; done", "Date": "03/04/2026 17:45"}),
    ]
    assert parse_date("03/04/2026", fmt).isoformat() == "2026-04-03T00:00:00+01:00"
    assert parse_date("03/04/2026 17:45", fmt).isoformat() == "2026-04-03T17:45:00+01:00"
