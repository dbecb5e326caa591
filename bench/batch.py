"""Batch export and import through a real OpenSSH SFTP server, against a raw baseline measured in the same run.

Export: N cases waiting for a batch target are written as one CSV file and uploaded by the ``batch.export`` job
(claim in the store, stream the rows, upload under a temporary name, rename, mark delivered). The baseline writes
the same rows with the ``csv`` module to a local file and uploads it with paramiko.

Import: a result file of N rows, one status change per case, is taken in by the ``batch.import`` job (download,
checksum, ledger, parse, map, intake with audit and routing, archive). The baseline downloads the same file with
paramiko and reads its rows with the ``csv`` module.

Memory: the growth of this process's resident set during each job, sampled; streamed work stays flat however
large the file.

Store floors: the one write each job cannot do without, done alone by a single statement inside the store and
committed, with no row passing through Python: the export's deliveries marked delivered (one ``UPDATE``, on a copy
of the table), and the import's status changes written to a table of the inbox's shape (one ``INSERT ... SELECT``).
No job can run faster than its floor, so a floor under half its baseline's rate puts the 50% target out of reach
on that machine.

    .venv/bin/python bench/batch.py                       # 200,000 rows, results written to docs/benchmarks.md
    .venv/bin/python bench/batch.py --rows 5000 --output -   # a quick look, printed only
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
from sqlalchemy import Connection, TextClause, insert, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from databases import fresh_database  # noqa: E402
from report import write_section  # noqa: E402
from support.batch import EXPORT_OPTIONS, IMPORT_OPTIONS, KEY_ENV, write_batch_mappings  # noqa: E402
from support.sftp import SftpServer, sftp_server  # noqa: E402

from broker.logging import configure_logging  # noqa: E402
from broker.runtime.process import Broker  # noqa: E402
from broker.scheduling.context import JobContext  # noqa: E402
from broker.scheduling.jobs import JOBS  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.store.tables import CaseRecord, DeliveryRecord, EventRecord  # noqa: E402

RESULTS_START = "<!-- batch results -->"
RESULTS_END = "<!-- end batch results -->"
HEADER = ["History Date/Time", "Recorded Date", "CRNo", "Council Ref", "Stage Desc.", "Job Type", "Address",
          "Postcode", "Comments"]
OCCURRED = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)


@dataclass
class Phase:
    rows: int
    seconds: float
    rss_growth_mb: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


@dataclass
class Result:
    rows: int
    store: str
    export_baseline: Phase
    export: Phase
    import_baseline: Phase
    imported: Phase
    export_floor: Phase
    import_floor: Phase
    file_mb: float


def case(number: int) -> dict[str, Any]:
    return {"case_id": f"CRM-{number:07d}", "service_code": "waste.missed_bin", "channel": "web",
            "description": f"Bin not collected, number {number}, left by the gate as usual",
            "location": {"address": f"{number} High Street, Flat 2", "postcode": "SW1A 1AA"},
            "reporter": {"kind": "anonymous"}, "attributes": {"bin_type": "general"}, "status": "open"}


def export_cells(number: int) -> list[str]:
    """What the export writes for a case: the baseline writes exactly these cells."""
    body = case(number)
    return [body["case_id"], "MISSED", "20/11/2026 09:15", body["location"]["address"], "SW1A 1AA", "general",
            body["description"]]


def seed(broker: Broker, rows: int) -> None:
    """N cases, each with a case.created event and a batch delivery waiting for the target (bulk, not timed)."""
    now = datetime.now(UTC)
    step = 5_000
    for start in range(0, rows, step):
        cases, events, deliveries = [], [], []
        for number in range(start, min(rows, start + step)):
            body, pk, event_id = case(number), str(uuid.uuid4()), str(uuid.uuid4())
            cases.append({"id": pk, "source": "crm", "case_id": body["case_id"], "service_code": body["service_code"],
                          "status": "open", "snapshot": body, "created_at": now, "updated_at": now})
            events.append({"event_id": event_id, "case_pk": pk, "sequence": 1, "event_type": "case.created",
                           "schema_version": "1.0", "source": "crm", "correlation_id": event_id,
                           "occurred_at": OCCURRED, "received_at": now, "received_via": "http",
                           "idempotency_key": None,
                           "payload": {"event_id": event_id, "event_type": "case.created", "schema_version": "1.0",
                                       "occurred_at": OCCURRED.isoformat(), "source": "crm", "case": body}})
            deliveries.append({"event_id": event_id, "case_pk": pk, "target": "waste-contractor", "mode": "batch",
                               "state": "batch_pending", "sequence": 1, "attempts": 0, "created_at": now,
                               "updated_at": now})
        with broker.store.transaction() as session:
            session.execute(insert(CaseRecord), cases)
            session.execute(insert(EventRecord), events)
            session.execute(insert(DeliveryRecord), deliveries)
    if broker.store.is_postgres:
        # A live store has grown slowly, and autovacuum has kept the planner's statistics up to date as it did;
        # one loaded a moment ago has none, and the planner would take its tables for nearly empty.
        with broker.store.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")


@contextmanager
def scratch_copy(connection: Connection, table: str, rows_sql: str) -> Iterator[str]:
    """An empty table of ``table``'s shape (its key, indexes and unique constraints; on SQLite its foreign keys
    too), filled or not by ``rows_sql`` (``INSERT INTO {copy} ...``, not timed), dropped on the way out."""
    copy = f"floor_{table}"
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
    else:
        statements = connection.exec_driver_sql(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC",
            (table,)).all()
        for kind, name, sql in statements:
            sql = sql.replace(name, f"floor_{name}", 1)
            connection.exec_driver_sql(sql if kind == "table" else sql.replace(f" ON {table} ", f" ON {copy} "))
    try:
        if rows_sql:
            connection.exec_driver_sql(rows_sql.format(copy=copy))
        connection.commit()
        yield copy
    finally:
        connection.rollback()
        connection.exec_driver_sql(f"DROP TABLE {copy}")
        connection.commit()


def timed_write(connection: Connection, rows: int, what: str, statement: TextClause,
                params: dict[str, Any] | None = None) -> float:
    """Seconds for ``statement`` and its commit; it must touch exactly ``rows`` rows (``what``, for the error)."""
    started = time.perf_counter()
    written = connection.execute(statement, params or {})
    connection.commit()
    seconds = time.perf_counter() - started
    if written.rowcount != rows:
        raise RuntimeError(f"{written.rowcount} {what} in a store floor, expected {rows}")
    return seconds


def export_floor(broker: Broker, rows: int) -> float:
    """Seconds for one ``UPDATE`` marking the seeded deliveries delivered, and its commit: what the export's last
    step must write at the least. It runs on a copy of the deliveries, so the export then finds the table as seeded."""
    now = datetime.now(UTC)
    with broker.store.engine.connect() as connection, scratch_copy(
            connection, "deliveries", "INSERT INTO {copy} SELECT * FROM deliveries") as copy:
        if broker.store.is_postgres:
            connection.exec_driver_sql(f"ANALYZE {copy}")
            connection.commit()
        return timed_write(connection, rows, "deliveries marked", text(
            f"UPDATE {copy} SET state = 'delivered', delivered_at = :now, updated_at = :now, "
            "attempts = attempts + 1, external_ref = :file "
            "WHERE target = 'waste-contractor' AND state = 'batch_pending'"),
            {"now": now, "file": "CASEBRIDGE_20261120_0130.CSV"})


def import_floor(broker: Broker, rows: int) -> float:
    """Seconds for one ``INSERT ... SELECT`` copying the import's status changes into an empty table of the inbox's
    shape, and its commit: the least an import that records its events can write. Nothing is parsed, mapped,
    routed or audited, and no row leaves the store."""
    with broker.store.engine.connect() as connection, scratch_copy(connection, "events", "") as copy:
        return timed_write(connection, rows, "events copied", text(
            f"INSERT INTO {copy} SELECT * FROM events WHERE event_type = 'case.status_changed'"))


def write_result_file(path: Path, rows: int) -> None:
    with path.open("w", encoding="cp1252", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(HEADER)
        for number in range(rows):
            writer.writerow(["21/11/2026 08:30", "21/11/2026", f"WC{number:07d}", f"CRM-{number:07d}", "Completed",
                             "MISSED", "", "", "Bin emptied, 08:10"])


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measured(rows: int, work: Callable[[], object]) -> Phase:
    """Time ``work`` and sample the resident set while it runs."""
    start_rss, peak, done = rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return Phase(rows, seconds, max(0.0, max(peak[0], rss_mb()) - start_rss))


def baseline_export(server: SftpServer, folder: Path, rows: int) -> None:
    local = folder / "baseline-export.csv"
    with local.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["Council Ref", "Job Type", "Logged", "Address", "Postcode", "Bin Type", "Details"])
        writer.writerows(export_cells(number) for number in range(rows))
    with server.login() as sftp:
        sftp.put(str(local), "baseline/export.csv")


def baseline_import(server: SftpServer, folder: Path, rows: int) -> None:
    local = folder / "baseline-import.csv"
    with server.login() as sftp:
        sftp.get("baseline/result.csv", str(local))
    with local.open(encoding="cp1252", newline="") as source:
        read = sum(1 for _ in csv.DictReader(source))
    if read != rows:
        raise RuntimeError(f"baseline read {read} rows, expected {rows}")


@contextmanager
def store_url(kind: str, postgres_url: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'casebridge.db'}"
        return
    with fresh_database(postgres_url) as url:
        yield url


def run(rows: int, store: str, postgres_url: str) -> Result:
    with tempfile.TemporaryDirectory(prefix="casebridge-bench-") as tmp:
        folder = Path(tmp)
        with sftp_server(folder / "sshd") as server, store_url(store, postgres_url, folder) as database_url:
            os.environ[KEY_ENV] = str(server.user_key)
            for directory in ("baseline", "inbound"):
                (server.root / directory).mkdir()
            mappings = write_batch_mappings(folder / "mappings", server)
            (folder / "schedules").mkdir()
            settings = Settings(database_url=database_url, amqp_url="memory://", mappings_dir=mappings,
                                schedules_dir=folder / "schedules", log_level="WARNING")
            configure_logging(settings.log_level)  # one log line per event would be measured too
            broker = Broker(settings)
            try:
                broker.migrate()
                seed(broker, rows)
                context = JobContext(broker.store, broker.configuration, broker.intake)
                floor_export = Phase(rows, export_floor(broker, rows))

                export_baseline = measured(rows, lambda: baseline_export(server, folder, rows))
                exported: dict[str, Any] = {}
                export = measured(rows, lambda: exported.update(
                    JOBS["batch.export"](JobContext(**{**context.__dict__, "schedule": "bench-export"}),
                                         EXPORT_OPTIONS)))
                if exported.get("rows") != rows:
                    raise RuntimeError(f"the export wrote {exported.get('rows')} rows, expected {rows}")
                file_mb = (server.root / "outbound" / str(exported["file"])).stat().st_size / 1_048_576

                result_file = folder / "CSVEXP_21112026_0830.CSV"
                write_result_file(result_file, rows)
                with server.login() as sftp:
                    sftp.put(str(result_file), "baseline/result.csv")
                    sftp.put(str(result_file), f"inbound/{result_file.name}")
                import_baseline = measured(rows, lambda: baseline_import(server, folder, rows))
                imported_summary: dict[str, Any] = {}
                imported = measured(rows, lambda: imported_summary.update(
                    JOBS["batch.import"](JobContext(**{**context.__dict__, "schedule": "bench-import"}),
                                         IMPORT_OPTIONS)))
                if imported_summary.get("rows") != rows or imported_summary.get("failures"):
                    raise RuntimeError(f"the import took {imported_summary}, expected {rows} rows and no failures")
                floor_import = Phase(rows, import_floor(broker, rows))
            finally:
                broker.shutdown()
    return Result(rows, store, export_baseline, export, import_baseline, imported, floor_export, floor_import,
                  file_mb)


def report(result: Result) -> str:
    def ratio(phase: Phase, baseline: Phase) -> str:
        share = phase.rate / baseline.rate
        return f"**{share:.1%}** (target at least 50%: {'met' if share >= 0.5 else 'NOT met'})"

    def floor(phase: Phase, baseline: Phase) -> str:
        share = phase.rate / baseline.rate
        verdict = ("under 50%: no job that writes this can meet the target here" if share < 0.5
                   else "leaves room for the target")
        return f"**{share:.1%}** ({verdict})"

    return "\n".join([
        RESULTS_START,
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, {paramiko.__name__} {paramiko.__version__}, OpenSSH sshd on loopback, "
        f"store {result.store}; {result.rows:,} rows (the exported file: {result.file_mb:.1f} MB).",
        "",
        "| path | rows/s | seconds | memory growth |",
        "| --- | ---: | ---: | ---: |",
        f"| baseline export: csv writer + paramiko put | {result.export_baseline.rate:,.0f} | "
        f"{result.export_baseline.seconds:.1f} | {result.export_baseline.rss_growth_mb:.0f} MB |",
        f"| Casebridge `batch.export`: claim, stream from the store, upload, rename, mark delivered | "
        f"{result.export.rate:,.0f} | {result.export.seconds:.1f} | {result.export.rss_growth_mb:.0f} MB |",
        f"| baseline import: paramiko get + csv reader | {result.import_baseline.rate:,.0f} | "
        f"{result.import_baseline.seconds:.1f} | {result.import_baseline.rss_growth_mb:.0f} MB |",
        f"| Casebridge `batch.import`: download, ledger, parse, map, intake (audit, routing), archive | "
        f"{result.imported.rate:,.0f} | {result.imported.seconds:.1f} | {result.imported.rss_growth_mb:.0f} MB |",
        f"| store floor for the export: one `UPDATE` marking the deliveries delivered (on a copy) | "
        f"{result.export_floor.rate:,.0f} | {result.export_floor.seconds:.1f} | — |",
        f"| store floor for the import: one `INSERT ... SELECT` of the status changes into an inbox-shaped table | "
        f"{result.import_floor.rate:,.0f} | {result.import_floor.seconds:.1f} | — |",
        "",
        f"- Export / baseline: {ratio(result.export, result.export_baseline)}.",
        f"- Import / baseline: {ratio(result.imported, result.import_baseline)}.",
        f"- Store floor / baseline: export {floor(result.export_floor, result.export_baseline)}; "
        f"import {floor(result.import_floor, result.import_baseline)}.",
        RESULTS_END,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows exported and imported (default 200,000)")
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql",
                        help="the store (default postgresql: a fresh database on --postgres-url)")
    parser.add_argument("--postgres-url", default=os.environ.get("CASEBRIDGE_TEST_POSTGRES_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"),
                        help="markdown file whose batch results section is rewritten ('-' prints only)")
    args = parser.parse_args()
    text = report(run(args.rows, args.store, args.postgres_url))
    print(text)
    if args.output != "-":
        write_section(Path(args.output), text, RESULTS_START, RESULTS_END)


if __name__ == "__main__":
    main()
