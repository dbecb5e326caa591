"""Batch targets against a real OpenSSH server: export, import, interruptions, duplicates, bad rows, security."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support.batch import EXPORT_OPTIONS, IMPORT_OPTIONS, PASSWORD_ENV, TARGET, BatchWorld, batch_world

import broker.batch.export as export_module
from broker.batch.errors import BatchError, HostKeyRejected
from broker.scheduling.jobs import JOBS
from broker.store.tables import (
    AuditEntry,
    BatchFile,
    CaseRecord,
    DeliveryRecord,
    EventRecord,
    ExternalRef,
    FailedMessage,
)

HEADER = "History Date/Time,Recorded Date,CRNo,Council Ref,Stage Desc.,Job Type,Address,Postcode,Comments\r\n"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchWorld]:
    with batch_world(tmp_path, f"sqlite:///{tmp_path / 'casebridge.db'}", monkeypatch) as running:
        yield running


def exported_rows(world: BatchWorld) -> tuple[bytes, list[list[str]]]:
    [name] = world.listing("outbound")
    raw = (world.server.root / "outbound" / name).read_bytes()
    return raw, list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))


def result_row(case_id: str, crno: str, stage: str, when: str = "01/11/2026 08:30", comments: str = "",
               job: str = "MISSED", address: str = "", postcode: str = "") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(
        [when, when[:10], crno, case_id, stage, job, address, postcode, comments])
    return out.getvalue()


def test_export_of_1000_cases_then_a_result_file_that_references_them(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with batch_world(tmp_path, database_url, monkeypatch) as world:
        ids = world.seed_cases(999)
        ids += world.seed_cases(1, start=999, description='=HYPERLINK("http://evil.example","Click")',
                                location={"address": "@SUM(A1), Flat 3\nBack door", "postcode": "SW1A 1AA"})
        assert world.delivery_states() == {"batch_pending": 1000}

        summary = JOBS["batch.export"](world.context(), EXPORT_OPTIONS)

        assert summary["files"] == 1 and summary["rows"] == 1000 and summary["failures"] == 0
        raw, rows = exported_rows(world)
        assert raw.count(b"\r\n") >= 1001 and not raw.startswith(b"\xef\xbb\xbf")
        assert rows[0] == ["Council Ref", "Job Type", "Logged", "Address", "Postcode", "Bin Type", "Details"]
        assert [row[0] for row in rows[1:]] == ids
        assert rows[1][1:3] == ["MISSED", "20/11/2026 09:15"]  # code translated; UK local time (GMT in November)
        assert rows[-1][3] == "'@SUM(A1), Flat 3\nBack door"  # quoted, newline kept, formula neutralised
        assert rows[-1][6] == '\'=HYPERLINK("http://evil.example","Click")'
        assert world.listing("outbound") == [summary["file"]]  # no temporary file left behind
        assert world.delivery_states() == {"delivered": 1000}
        with world.store.read() as session:
            file = session.scalars(select(BatchFile)).one()
            assert (file.state, file.rows, file.size) == ("uploaded", 1000, len(raw))
            audited = session.scalar(select(func.count()).select_from(AuditEntry).where(
                AuditEntry.step == "delivered", AuditEntry.target == TARGET))
            assert audited == 1000

        # Nothing pending: the next run writes no file.
        assert JOBS["batch.export"](world.context(), EXPORT_OPTIONS)["files"] == 0

        result = HEADER + "".join(result_row(case_id, f"WC{n:06d}", "Completed" if n % 2 else "Scheduled",
                                             comments="Bin emptied, 08:10" if n % 2 else "")
                                  for n, case_id in enumerate(ids))
        world.put("CSVEXP_01112026_0830.CSV", result.encode("cp1252"))
        imported = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)

        assert (imported["files"], imported["rows"], imported["failures"]) == (1, 1000, 0)
        assert world.listing("inbound") == ["archive"]
        assert world.listing("inbound/archive") == ["CSVEXP_01112026_0830.CSV"]
        with world.store.read() as session:
            refs = dict(session.execute(select(CaseRecord.case_id, ExternalRef.reference)
                                        .join(ExternalRef, ExternalRef.case_pk == CaseRecord.id)
                                        .where(ExternalRef.target == TARGET)).all())
            assert len(refs) == 1000 and refs[ids[7]] == "WC000007"
            statuses = dict(session.execute(select(CaseRecord.case_id, CaseRecord.status)).all())
            assert statuses[ids[1]] == "fixed" and statuses[ids[2]] == "action_scheduled"
            changes = session.scalars(select(EventRecord).where(EventRecord.event_type == "case.status_changed")
                                      .order_by(EventRecord.received_at)).all()
            assert len(changes) == 1000 and {event.source for event in changes} == {TARGET}
            first = next(event for event in changes if event.payload["case"]["case_id"] == ids[1])
            assert first.payload["change"] == {"status": "fixed", "reason": "Bin emptied, 08:10",
                                               "external_status_code": "Completed"}
            assert first.payload["occurred_at"].startswith("2026-11-01T08:30:00")
            # The normal pipeline routes them on: a real-time delivery to the CRM for each, audited.
            assert session.scalar(select(func.count()).select_from(DeliveryRecord).where(
                DeliveryRecord.target == "crm", DeliveryRecord.state == "pending")) == 1000
            file = session.scalars(select(BatchFile).where(BatchFile.direction == "import")).one()
            assert (file.state, file.rows, file.failed_rows) == ("archived", 1000, 0)


def test_an_upload_cut_midway_leaves_no_file_and_the_cases_pending_until_the_next_run(world: BatchWorld) -> None:
    world.seed_cases(1000, description="A long description to make the file several chunks long " * 8)
    cut: list[int] = []

    def cut_the_line(what: str, done: int, total: int | None) -> None:
        if what == "bytes" and not cut and total and done < total:
            cut.append(world.server.cut_connections())

    with pytest.raises(BatchError, match="stay pending"):
        JOBS["batch.export"](world.context(progress=cut_the_line), EXPORT_OPTIONS)

    assert cut and cut[0] > 0
    assert not [name for name in world.listing("outbound") if name.startswith("CASEBRIDGE_")]
    assert world.delivery_states() == {"batch_pending": 1000}
    with world.store.read() as session:
        [interrupted] = session.scalars(select(BatchFile)).all()
        assert interrupted.state == "uploading"  # the server could not be asked; the next run decides

    summary = JOBS["batch.export"](world.context(), EXPORT_OPTIONS)

    assert summary["released_files"] == 1 and summary["rows"] == 1000
    assert world.listing("outbound") == [summary["file"]]  # the partial temporary file is gone too
    _, rows = exported_rows(world)
    assert len(rows) == 1001
    assert world.delivery_states() == {"delivered": 1000}
    with world.store.read() as session:
        assert [file.state for file in session.scalars(select(BatchFile).order_by(BatchFile.id))] \
            == ["abandoned", "uploaded"]


def test_an_upload_that_fails_while_the_server_can_still_be_asked_releases_at_once(world: BatchWorld) -> None:
    world.seed_cases(20)
    theirs = world.server.root / "outbound" / "FIXED.CSV"

    def contractor_drops_a_file_of_that_name(what: str, _done: int, _total: int | None) -> None:
        if what == "bytes" and not theirs.exists():
            theirs.write_bytes(b"the contractor's own file\r\n")

    with pytest.raises(BatchError, match="stay pending"):
        JOBS["batch.export"](world.context(progress=contractor_drops_a_file_of_that_name),
                             {**EXPORT_OPTIONS, "file_name": "FIXED.CSV"})

    # The rename refused to replace the existing file; it is untouched, and nothing was marked delivered.
    assert (world.server.root / "outbound" / "FIXED.CSV").read_bytes() == b"the contractor's own file\r\n"
    assert world.listing("outbound") == ["FIXED.CSV"]
    assert world.delivery_states() == {"batch_pending": 20}
    with world.store.read() as session:
        [file] = session.scalars(select(BatchFile)).all()
        assert file.state == "abandoned" and "another size" in (file.error or "")
    # The next run picks a free name rather than fail again.
    assert JOBS["batch.export"](world.context(), {**EXPORT_OPTIONS, "file_name": "FIXED.CSV"})["file"] \
        == "FIXED_2.CSV"
    assert world.delivery_states() == {"delivered": 20}


def test_a_crash_between_rename_and_commit_is_completed_by_the_next_run_without_a_second_file(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.seed_cases(50)
    real_complete = export_module._complete

    def crash(*_args: object) -> None:
        raise SystemExit("the scheduler process died")

    monkeypatch.setattr(export_module, "_complete", crash)
    with pytest.raises(SystemExit):
        JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    [name] = world.listing("outbound")  # renamed into place, but not yet recorded
    assert world.delivery_states() == {"batch_pending": 50}
    world.seed_cases(5, start=50)  # arrived meanwhile: they must go in the next file, not the recovered one

    monkeypatch.setattr(export_module, "_complete", real_complete)
    summary = JOBS["batch.export"](world.context(), EXPORT_OPTIONS)

    assert summary["recovered_files"] == 1 and summary["rows"] == 5
    assert sorted(world.listing("outbound")) == sorted([name, summary["file"]])
    assert world.delivery_states() == {"delivered": 55}
    with world.store.read() as session:
        files = session.scalars(select(BatchFile).order_by(BatchFile.id)).all()
        assert [(file.state, file.rows) for file in files] == [("uploaded", 50), ("uploaded", 5)]


def test_the_same_import_file_offered_twice_is_processed_once(world: BatchWorld) -> None:
    ids = world.seed_cases(3)
    JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    content = (HEADER + "".join(result_row(case_id, f"WC{n}", "Completed") for n, case_id in enumerate(ids))).encode()
    world.put("CSVEXP_02112026_0830.CSV", content)
    first = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)
    world.put("CSVEXP_02112026_0830.CSV", content)  # the contractor's system sends it again

    second = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)

    assert (first["files"], first["rows"]) == (1, 3)
    assert (second["files"], second["rows"], second["skipped_files"]) == (0, 0, 1)
    assert world.listing("inbound") == ["archive"]
    assert len(world.listing("inbound/archive")) == 2  # the second copy is moved aside under another name
    with world.store.read() as session:
        assert session.scalar(select(func.count()).select_from(EventRecord)
                              .where(EventRecord.event_type == "case.status_changed")) == 3


def test_bad_rows_fail_alone_with_file_line_and_reason(world: BatchWorld) -> None:
    ids = world.seed_cases(4)
    JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    content = (
        HEADER
        + result_row(ids[0], "WC0", "Completed", comments='Said "thanks",\nleft a note')  # line 2, two lines long
        + result_row(ids[1], "WC1", "Exploded")                                            # line 4
        + result_row(ids[2], "WC2", "Completed", when="31/02/2026 08:30")                  # line 5
        + result_row("CRM-999999", "WC9", "Completed")                                     # line 6
        + "01/11/2026 08:30,too,few\r\n"                                                   # line 7
        + result_row(ids[3], "WC3", "No Access")                                           # line 8
    )
    world.put("CSVEXP_03112026_0830.CSV", content.encode())

    summary = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)

    assert (summary["files"], summary["rows"], summary["failures"]) == (1, 2, 4)
    with world.store.read() as session:
        failures = session.scalars(select(FailedMessage).order_by(FailedMessage.id)).all()
        assert [(failure.reason, failure.error_text.split(":")[0]) for failure in failures] == [
            ("batch_unknown_status", "CSVEXP_03112026_0830.CSV line 4"),
            ("batch_bad_date", "CSVEXP_03112026_0830.CSV line 5"),
            ("batch_unknown_case", "CSVEXP_03112026_0830.CSV line 6"),
            ("batch_wrong_column_count", "CSVEXP_03112026_0830.CSV line 7"),
        ]
        assert all(failure.target == TARGET and failure.state == "open" for failure in failures)
        assert b"Exploded" in (failures[0].raw_body or b"")
        statuses = dict(session.execute(select(CaseRecord.case_id, CaseRecord.status)).all())
        assert statuses == {ids[0]: "fixed", ids[1]: "open", ids[2]: "open", ids[3]: "no_further_action"}
        note = session.scalars(select(EventRecord).where(EventRecord.event_type == "case.status_changed")
                               .order_by(EventRecord.received_at)).first()
        assert note is not None and note.payload["change"]["reason"] == 'Said "thanks",\nleft a note'
    assert world.listing("inbound/archive") == ["CSVEXP_03112026_0830.CSV"]


@pytest.mark.parametrize(("encoding", "prefix"), [("cp1252", b""), ("utf-8", b"\xef\xbb\xbf")])
def test_windows_1252_and_utf8_bom_files_are_read(world: BatchWorld, encoding: str, prefix: bytes) -> None:
    ids = world.seed_cases(2)
    JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    content = HEADER + result_row(ids[0], "WC0", "Completed", comments="Left at 5°C, £20 charge") \
        + result_row(ids[1], "WC1", "Scheduled", comments="Café car park")
    world.put("CSVEXP_04112026_0830.CSV", prefix + content.encode(encoding))

    summary = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)

    assert (summary["rows"], summary["failures"]) == (2, 0)
    with world.store.read() as session:
        reasons = sorted(event.payload["change"]["reason"] for event in session.scalars(
            select(EventRecord).where(EventRecord.event_type == "case.status_changed")))
    assert reasons == ["Café car park", "Left at 5°C, £20 charge"]


def test_a_case_raised_in_the_lob_system_becomes_a_new_case(world: BatchWorld) -> None:
    content = HEADER + result_row("", "WC777", "Scheduled", address="3 Mill Lane", postcode="SE1 7PB") \
        + result_row("", "WC777", "Completed", when="01/11/2026 10:00")
    world.put("CSVEXP_05112026_0830.CSV", content.encode())

    summary = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)

    assert (summary["rows"], summary["failures"]) == (2, 0)
    with world.store.read() as session:
        case = session.scalars(select(CaseRecord).where(CaseRecord.case_id == "WC777")).one()
        assert (case.source, case.service_code, case.status) == (TARGET, "waste.missed_bin", "fixed")
        assert session.get(ExternalRef, (case.id, TARGET)) is not None
    # A later file about the same LOB reference finds the case by it.
    world.put("CSVEXP_06112026_0830.CSV", (HEADER + result_row("", "WC777", "No Access", when="02/11/2026 09:00"))
              .encode())
    assert JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)["rows"] == 1
    with world.store.read() as session:
        assert session.scalars(select(CaseRecord.status).where(CaseRecord.case_id == "WC777")).one() \
            == "no_further_action"


def test_a_case_raised_in_the_lob_system_under_a_reference_with_slashes_becomes_a_new_case(world: BatchWorld) -> None:
    """A reference such as Uniform's ``12/00034/AB`` cannot be a case id as it is (it is part of the case's URL):
    the case gets an id spelt from it, and the reference is kept as it is."""
    world.put("CSVEXP_08112026_0830.CSV", (HEADER + result_row("", "12/00034/AB", "Scheduled", postcode="SE1 7PB")
                                           + result_row("", "12/00034~AB", "Scheduled", postcode="SE1 7PB"))
              .encode())
    summary = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)
    with world.store.read() as session:
        reasons = [failed.error_text for failed in session.scalars(select(FailedMessage))]
    assert (summary["rows"], summary["failures"], reasons) == (2, 0, [])
    with world.store.read() as session:
        cases = {case.case_id: case for case in session.scalars(select(CaseRecord))}
        assert set(cases) == {"12~2F00034~2FAB", "12~2F00034~7EAB"}
        assert session.get_one(ExternalRef, (cases["12~2F00034~2FAB"].id, TARGET)).reference == "12/00034/AB"


def test_remote_names_that_leave_the_directory_are_refused(world: BatchWorld) -> None:
    ids = world.seed_cases(1)
    JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    good = (HEADER + result_row(ids[0], "WC0", "Completed")).encode()
    world.put("CSVEXP_..\\..\\escape.CSV", good)  # a legal file name on the server, a path on Windows
    world.put("CSVEXP_07112026_0830.CSV", good)

    summary = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)

    assert (summary["files"], summary["failures"]) == (1, 1)
    with world.store.read() as session:
        refused = session.scalars(select(FailedMessage)).one()
        assert refused.reason == "batch_unsafe_file_name" and "path separator" in refused.error_text
    assert "CSVEXP_..\\..\\escape.CSV" in world.listing("inbound")  # left alone, not read, not moved

    with pytest.raises(ValueError, match="path separator"):
        JOBS["batch.export"](world.context(), {**EXPORT_OPTIONS, "file_name": "../escape_{now:%H%M}.csv"})
    with pytest.raises(ValueError, match=re.escape("'..'")):
        JOBS["batch.import"](world.context("waste-import"), {**IMPORT_OPTIONS, "archive_dir": "inbound/../../etc"})


def test_an_unknown_host_key_is_refused_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = tmp_path / "known_hosts_without_the_server"
    stranger.write_text("[127.0.0.1]:1 ssh-ed25519 "
                        "AAAAC3NzaC1lZDI1NTE5AAAAIHq0yT9cZ8m0H2r5dTqfZ2Q3s3o5oM7k4Y2bq8m9ZcZk\n")
    with batch_world(tmp_path, f"sqlite:///{tmp_path / 'casebridge.db'}", monkeypatch, known_hosts=stranger) as world:
        world.seed_cases(3)
        with pytest.raises(HostKeyRejected, match=r"is not in .*refusing to connect to an unknown server"):
            JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
        assert world.delivery_states() == {"batch_pending": 3}
        assert world.listing("outbound") == []
        with world.store.read() as session:
            assert session.scalar(select(func.count()).select_from(BatchFile)) == 0


def test_a_password_login_exports_and_a_wrong_password_is_refused_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        # The test command runs as root in CI, where this must run; elsewhere say plainly why it did not.
        message = "a password-login SFTP server needs root (a system account's password, sshd checking it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    with batch_world(tmp_path, f"sqlite:///{tmp_path / 'casebridge.db'}", monkeypatch, password_login=True) as world:
        assert "key_path_env" not in (world.settings.mappings_dir / f"{TARGET}.yaml").read_text()
        world.seed_cases(3)
        exported = JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
        assert exported["rows"] == 3 and world.listing("outbound") == [exported["file"]]
        assert world.delivery_states() == {"delivered": 3}

        world.seed_cases(2, start=3)
        monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
        with pytest.raises(BatchError, match=r"SFTP login to 127\.0\.0\.1:\d+ failed: Authentication failed"):
            JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
        assert world.delivery_states() == {"delivered": 3, "batch_pending": 2}
        assert world.listing("outbound") == [exported["file"]]


def test_a_changed_host_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = tmp_path / "known_hosts_with_another_key"
    with batch_world(tmp_path, f"sqlite:///{tmp_path / 'casebridge.db'}", monkeypatch, known_hosts=impostor) as world:
        other = tmp_path / "other_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        impostor.write_text(f"[127.0.0.1]:{world.server.port} {Path(f'{other}.pub').read_text()}")
        with pytest.raises(HostKeyRejected, match="does not match"):
            JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)


def test_an_event_that_does_not_carry_the_case_is_exported_from_the_stored_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.intake.transaction import Submission
    from broker.model.events import CaseStatusChanged

    with batch_world(tmp_path, f"sqlite:///{tmp_path / 'casebridge.db'}", monkeypatch,
                     batch_events="[case.created, case.status_changed]", export_encoding="windows-1252") as world:
        [case_id] = world.seed_cases(1, location={"address": "1 Café Row", "postcode": "SE1 7PB"})
        changed = CaseStatusChanged.model_validate({
            "event_id": "7d0c0a52-1b7e-4f0e-9b1e-5e0f2b1c9a01", "occurred_at": "2026-07-01T12:00:00Z",
            "source": "crm", "case": {"case_id": case_id}, "change": {"status": "investigating"}})
        world.broker.intake.accept_many([Submission(changed, "http", "system:crm")])

        JOBS["batch.export"](world.context(), EXPORT_OPTIONS)

        [name] = world.listing("outbound")
        rows = list(csv.reader(io.StringIO((world.server.root / "outbound" / name).read_bytes().decode("cp1252"),
                                           newline="")))
        assert [row[0] for row in rows[1:]] == [case_id, case_id]
        assert rows[2][2] == "01/07/2026 13:00"  # BST in July
        assert rows[2][3:5] == ["1 Café Row", "SE1 7PB"]  # from the stored case: the event carried only its id


def test_a_file_still_being_written_is_left_for_the_next_run(world: BatchWorld,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import broker.batch.importer as importer_module

    ids = world.seed_cases(2)
    JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    world.put("CSVEXP_08112026_0830.CSV", (HEADER + result_row(ids[0], "WC0", "Completed")).encode())
    growing = world.server.root / "inbound" / "CSVEXP_08112026_0830.CSV"

    def contractor_still_writing(seconds: float) -> None:
        # The contractor appends a row while the import waits between its two listings, however slow the machine.
        with growing.open("ab") as out:
            out.write(result_row(ids[1], "WC1", "Completed").encode())
        time.sleep(seconds)

    with monkeypatch.context() as patched:
        patched.setattr(importer_module, "time", types.SimpleNamespace(sleep=contractor_still_writing))
        first = JOBS["batch.import"](world.context("waste-import"), {**IMPORT_OPTIONS, "settle_seconds": 1.0})

    assert (first["files"], first["waiting_files"]) == (0, 1)
    assert "CSVEXP_08112026_0830.CSV" in world.listing("inbound")
    second = JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)
    assert (second["files"], second["rows"]) == (1, 2)


def test_an_import_that_dies_midway_is_finished_by_the_next_run_without_duplicates(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.batch.importer as importer_module

    ids = world.seed_cases(5)
    JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    content = HEADER + "".join(result_row(case_id, f"WC{n}", "Exploded" if n == 1 else "Completed")
                               for n, case_id in enumerate(ids))
    world.put("CSVEXP_09112026_0830.CSV", content.encode())
    real_take_chunk, chunks = importer_module._take_chunk, []

    def dies_on_the_second_chunk(*args: object) -> tuple[int, int]:
        chunks.append(1)
        if len(chunks) == 2:
            raise SystemExit("the scheduler process died")
        return real_take_chunk(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(importer_module, "_take_chunk", dies_on_the_second_chunk)
    with pytest.raises(SystemExit):
        JOBS["batch.import"](world.context("waste-import"), {**IMPORT_OPTIONS, "chunk_rows": 2})
    assert "CSVEXP_09112026_0830.CSV" in world.listing("inbound")  # not archived: not finished
    monkeypatch.setattr(importer_module, "_take_chunk", real_take_chunk)

    summary = JOBS["batch.import"](world.context("waste-import"), {**IMPORT_OPTIONS, "chunk_rows": 2})

    assert (summary["files"], summary["rows"], summary["failures"]) == (1, 4, 1)
    with world.store.read() as session:
        assert session.scalar(select(func.count()).select_from(EventRecord)
                              .where(EventRecord.event_type == "case.status_changed")) == 4
        assert session.scalar(select(func.count()).select_from(FailedMessage)) == 1
        assert session.scalar(select(func.count()).select_from(DeliveryRecord)
                              .where(DeliveryRecord.target == "crm")) == 4
        [file] = session.scalars(select(BatchFile).where(BatchFile.direction == "import")).all()
        assert file.state == "archived"
    assert world.listing("inbound/archive") == ["CSVEXP_09112026_0830.CSV"]
