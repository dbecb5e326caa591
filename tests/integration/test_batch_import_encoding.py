"""Imported files whose bytes are not all text in their encoding, against a real OpenSSH server: a row that cannot be
decoded fails alone and every other row is taken in; a file whose rows cannot be told apart is refused whole, left
where it is, and its run fails. Never a row dropped without a word."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support.batch import EXPORT_OPTIONS, IMPORT_OPTIONS, TARGET, BatchWorld, batch_world

from broker.errors import JobFailed
from broker.scheduling.jobs import JOBS
from broker.store.schedule_runs import last_runs
from broker.store.tables import BatchFile, CaseRecord, EventRecord, FailedMessage

HEADER = "History Date/Time,Recorded Date,CRNo,Council Ref,Stage Desc.,Job Type,Address,Postcode,Comments\r\n"
NAME = "CSVEXP_01122026_0830.CSV"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchWorld]:
    with batch_world(tmp_path, f"sqlite:///{tmp_path / 'casebridge.db'}", monkeypatch) as running:
        yield running


def row(case_id: str, crno: str, stage: str = "Completed", comments: str = "") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(
        ["01/11/2026 08:30", "01/11/2026", crno, case_id, stage, "MISSED", "", "", comments])
    return out.getvalue()


def sent_cases(world: BatchWorld, count: int) -> list[str]:
    """``count`` cases exported to the contractor, so the rows of its files can name them."""
    ids = world.seed_cases(count)
    JOBS["batch.export"](world.context(), EXPORT_OPTIONS)
    return ids


def import_now(world: BatchWorld) -> dict[str, object]:
    return JOBS["batch.import"](world.context("waste-import"), IMPORT_OPTIONS)


def failures(world: BatchWorld) -> list[FailedMessage]:
    with world.store.read() as session:
        return list(session.scalars(select(FailedMessage).order_by(FailedMessage.id)))


def statuses(world: BatchWorld) -> dict[str, str]:
    with world.store.read() as session:
        return dict(session.execute(select(CaseRecord.case_id, CaseRecord.status)).all())


def status_changes(world: BatchWorld) -> int:
    with world.store.read() as session:
        return session.scalar(select(func.count()).select_from(EventRecord)
                              .where(EventRecord.event_type == "case.status_changed")) or 0


def reasons(world: BatchWorld) -> list[str]:
    """The notes of the status changes taken in, sorted."""
    with world.store.read() as session:
        return sorted(event.payload["change"].get("reason") or "" for event in session.scalars(
            select(EventRecord).where(EventRecord.event_type == "case.status_changed")))


def file_states(world: BatchWorld) -> list[tuple[str, str, int, int]]:
    with world.store.read() as session:
        return [(file.name, file.state, file.rows, file.failed_rows) for file in session.scalars(
            select(BatchFile).where(BatchFile.direction == "import").order_by(BatchFile.id))]


def test_a_byte_windows_1252_leaves_undefined_fails_its_row_alone_and_the_rows_after_it_are_taken_in(
    world: BatchWorld,
) -> None:
    ids = sent_cases(world, 1000)
    rows = [row(case_id, f"WC{n}", comments="Left at 5°C, £20 charge").encode("cp1252")
            for n, case_id in enumerate(ids)]
    rows[499] = rows[499].replace(b"charge", b"ch\x81rge")  # row 500 of 1,000: line 501
    world.put(NAME, HEADER.encode("cp1252") + b"".join(rows))

    summary = import_now(world)

    assert (summary["files"], summary["rows"], summary["failures"]) == (1, 999, 1)
    [failed] = failures(world)
    assert failed.reason == "batch_undecodable_row"
    assert failed.error_text.startswith(f"{NAME} line 501: ")
    assert "0x81" in failed.error_text and "cp1252" in failed.error_text and "Comments" in failed.error_text
    for content in (ids[499], "WC499", "Left at", "charge"):  # the reason quotes nothing of the row
        assert content not in failed.error_text
    raw = (failed.raw_body or b"").decode("utf-8")  # the row as read, for support staff, the byte shown as �
    assert ids[499] in raw and "ch\ufffdrge" in raw
    assert status_changes(world) == 999
    now = statuses(world)
    assert (now[ids[498]], now[ids[499]], now[ids[500]], now[ids[999]]) == ("fixed", "open", "fixed", "fixed")
    assert set(reasons(world)) == {"Left at 5°C, £20 charge"}
    assert file_states(world) == [(NAME, "archived", 999, 1)]
    assert world.listing("inbound/archive") == [NAME]


def test_a_header_that_cannot_be_decoded_refuses_the_file_which_stays_for_the_next_run(world: BatchWorld) -> None:
    ids = sent_cases(world, 2)
    body = "".join(row(case_id, f"WC{n}", comments="5°C") for n, case_id in enumerate(ids)).encode("cp1252")
    world.put(NAME, HEADER.encode("cp1252").replace(b"Comments", b"Comm\x81nts") + body)

    with pytest.raises(JobFailed) as refused:
        import_now(world)

    assert NAME in refused.value.message and "header" in refused.value.message
    assert "0x81" in refused.value.message
    assert (refused.value.summary["files"], refused.value.summary["refused_files"]) == (0, 1)
    assert NAME in world.listing("inbound") and world.listing("inbound/archive") == []  # left in place
    assert world.listing("inbound/failed") == []
    assert file_states(world) == [(NAME, "refused", 0, 0)]  # known, and not as processed
    assert status_changes(world) == 0 and failures(world) == []
    run = last_runs(world.store)["waste-import"]
    assert run.outcome == "failed" and NAME in run.summary["error"]

    # The contractor sends the file again, mended: it is read as any new file.
    world.put(NAME, HEADER.encode("cp1252") + body)
    summary = import_now(world)
    assert (summary["files"], summary["rows"], summary["failures"]) == (1, 2, 0)
    assert reasons(world) == ["5°C", "5°C"]
    assert [state for _name, state, _rows, _failed in file_states(world)] == ["refused", "archived"]
    assert last_runs(world.store)["waste-import"].outcome == "succeeded"


def test_a_bom_marks_the_file_utf8_and_a_stray_byte_fails_only_its_row(world: BatchWorld) -> None:
    ids = sent_cases(world, 3)
    content = b"\xef\xbb\xbf" + HEADER.encode() + b"".join(
        row(case_id, f"WC{n}", comments="Café car park").encode() for n, case_id in enumerate(ids))
    world.put(NAME, content.replace("Café car park".encode(), b"Caf\xe9 car park", 1))  # a Windows-1252 é

    summary = import_now(world)

    assert (summary["files"], summary["rows"], summary["failures"]) == (1, 2, 1)
    [failed] = failures(world)
    assert failed.reason == "batch_undecodable_row" and failed.error_text.startswith(f"{NAME} line 2: ")
    assert "0xe9" in failed.error_text and "utf-8" in failed.error_text
    assert reasons(world) == ["Café car park", "Café car park"]
    assert statuses(world)[ids[0]] == "open"


def test_a_file_cut_short_inside_a_character_fails_its_last_row_and_keeps_the_others(world: BatchWorld) -> None:
    ids = sent_cases(world, 3)
    content = (HEADER + row(ids[0], "WC0", comments="Café car park") + row(ids[1], "WC1", comments="£20")
               + row(ids[2], "WC2", comments="Left at 5°C")).encode()
    world.put(NAME, content[:content.rindex("°".encode()) + 1])  # ends inside the two bytes of °

    summary = import_now(world)

    assert (summary["files"], summary["rows"], summary["failures"]) == (1, 2, 1)
    [failed] = failures(world)
    assert failed.reason == "batch_undecodable_row" and failed.error_text.startswith(f"{NAME} line 4: ")
    assert "0xc2" in failed.error_text
    assert reasons(world) == ["Café car park", "£20"]  # read as UTF-8, not as Windows-1252 (CafÃ©)
    assert statuses(world)[ids[2]] == "open"


def test_a_nul_byte_fails_its_row_alone(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with batch_world(tmp_path, database_url, monkeypatch) as world:
        ids = sent_cases(world, 3)
        content = (HEADER + row(ids[0], "WC0", comments="Lid") + row(ids[1], "WC1", comments="Lid\x00 broken")
                   + row(ids[2], "WC2", comments="Lid")).encode()
        world.put(NAME, content)

        summary = import_now(world)

        assert (summary["files"], summary["rows"], summary["failures"]) == (1, 2, 1)
        [failed] = failures(world)
        assert failed.reason == "batch_nul_in_row" and failed.error_text.startswith(f"{NAME} line 3: ")
        assert "Comments" in failed.error_text and "broken" not in failed.error_text
        assert reasons(world) == ["Lid", "Lid"]
        assert file_states(world) == [(NAME, "archived", 2, 1)]


def test_an_encoding_that_cannot_find_the_next_row_after_a_bad_byte_refuses_the_file_before_any_row(
    world: BatchWorld,
) -> None:
    ids = sent_cases(world, 300)
    world.broker.configuration.targets[TARGET].batch["import"]["encoding"] = "utf-16"  # type: ignore[index]
    rows = [row(case_id, f"WC{n}", comments="Left at 5°C").encode("utf-16-le") for n, case_id in enumerate(ids)]
    rows[249] = rows[249].replace("5°C".encode("utf-16-le"), b"\x00\xd8" + "5C".encode("utf-16-le"))  # lone surrogate
    world.put(NAME, b"\xff\xfe" + HEADER.encode("utf-16-le") + b"".join(rows))

    with pytest.raises(JobFailed) as refused:
        import_now(world)

    assert NAME in refused.value.message and "utf-16" in refused.value.message
    assert status_changes(world) == 0 and failures(world) == []  # not one row taken in before the refusal
    assert NAME in world.listing("inbound")
    assert file_states(world) == [(NAME, "refused", 0, 0)]
    assert last_runs(world.store)["waste-import"].outcome == "failed"
