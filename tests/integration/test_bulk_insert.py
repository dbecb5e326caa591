"""Bulk inserts (COPY on PostgreSQL, executemany on SQLite): rows, ids and errors as the callers expect them."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from support.envelopes import case_created
from support.services import postgres_database

from broker.config.loader import load_configuration
from broker.intake.transaction import Intake, Receipt
from broker.model import parse_event
from broker.store.bulk import insert_rows, insert_rows_with_ids
from broker.store.database import Store, is_store_unreachable
from broker.store.tables import AuditEntry, OutboxMessage

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.migrate()
    return store


def test_rows_arrive_with_json_text_times_and_nulls_intact(store: Store) -> None:
    detail = {"targets": ["highways"], "quote": "it's \"deep\"\ttab\nline", "nested": {"n": 1, "none": None}}
    with store.transaction() as session:
        insert_rows(session, AuditEntry, [
            {"case_pk": None, "event_id": "e-1", "target": None, "step": "received", "actor": "system:crm",
             "detail": detail, "at": NOW},
            {"case_pk": None, "event_id": "e-2", "target": "highways", "step": "routed", "actor": "a\\b",
             "detail": {}, "at": NOW},
        ])
    with store.read() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(row.event_id, row.target, row.step, row.actor, row.detail, row.at) for row in rows] == [
        ("e-1", None, "received", "system:crm", detail, NOW),
        ("e-2", "highways", "routed", "a\\b", {}, NOW),
    ]


def test_ids_come_back_in_the_order_of_the_rows(store: Store) -> None:
    rows = [{"target": f"key-{n}", "body": {"n": n}, "created_at": NOW} for n in range(50)]
    with store.transaction() as session:
        first = insert_rows_with_ids(session, OutboxMessage, rows[:20])
        second = insert_rows_with_ids(session, OutboxMessage, rows[20:])
    assert len(set(first + second)) == 50
    assert first == sorted(first) and second == sorted(second) and max(first) < min(second)
    with store.read() as session:
        stored = {row.id: row.target for row in session.scalars(select(OutboxMessage))}
    assert [stored[new_id] for new_id in first + second] == [row["target"] for row in rows]


def test_a_duplicate_key_is_sqlalchemys_integrity_error_and_nothing_is_kept(store: Store) -> None:
    rows = [{"id": 7, "target": "k", "body": {}, "created_at": NOW}]
    with store.transaction() as session:
        insert_rows(session, OutboxMessage, rows)
    with pytest.raises(IntegrityError), store.transaction() as session:
        insert_rows(session, OutboxMessage, [{**rows[0], "id": 8}, *rows])
    with store.read() as session:
        assert session.scalars(select(OutboxMessage.id)).all() == [7]


def test_two_intakes_racing_for_one_event_record_it_once(store: Store, mappings_dir: Path) -> None:
    """Both look the event up, find nothing, and insert: the loser's insert fails, it retries and sees the
    winner's row, so both get the same receipt and the event is recorded once."""
    import json

    event = parse_event(json.dumps(case_created("RACE-1")).encode())
    configuration = load_configuration(mappings_dir)
    intakes = [Intake(store, configuration) for _ in range(2)]
    barrier = threading.Barrier(2)
    receipts: list[Receipt] = []
    errors: list[BaseException] = []

    def accept(intake: Intake) -> None:
        try:
            barrier.wait()
            receipts.append(intake.accept(event, via="amqp", actor="system:crm"))
        except BaseException as exc:
            errors.append(exc)

    for _ in range(5):
        threads = [threading.Thread(target=accept, args=(intake,)) for intake in intakes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert {receipt.event_id for receipt in receipts} == {str(event.event_id)}
    assert len({receipt.case_pk for receipt in receipts}) == 1
    assert sum(not receipt.duplicate for receipt in receipts) == 1


def test_rows_are_updated_by_key_with_json_and_times(store: Store, mappings_dir: Path) -> None:
    import json

    from broker.store.bulk import update_rows
    from broker.store.tables import CaseRecord

    intake = Intake(store, load_configuration(mappings_dir))
    receipts = [intake.accept(parse_event(json.dumps(case_created(f"U-{n}")).encode()), via="http", actor="crm")
                for n in range(3)]
    later = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    with store.transaction() as session:
        update_rows(session, CaseRecord, [
            {"id": receipt.case_pk, "status": f"state-{n}", "snapshot": {"n": n, "text": "a\\\"b"},
             "updated_at": later}
            for n, receipt in enumerate(receipts[:2])
        ])
    with store.read() as session:
        cases = {case.id: case for case in session.scalars(select(CaseRecord))}
    for n, receipt in enumerate(receipts[:2]):
        case = cases[receipt.case_pk]
        assert (case.status, case.snapshot, case.updated_at) == (f"state-{n}", {"n": n, "text": "a\\\"b"}, later)
    untouched = cases[receipts[2].case_pk]
    assert untouched.status == "open" and untouched.snapshot["case_id"] == "U-2"


def test_a_connection_lost_mid_copy_is_an_outage_the_consumers_wait_out() -> None:
    """COPY is PostgreSQL's only: the server goes away under it, and the consumers must see an outage."""
    rows = [{"target": "k", "body": {}, "created_at": NOW}]
    with postgres_database() as url:
        store = Store(url)
        store.migrate()
        with pytest.raises(Exception) as caught, store.transaction() as session:
            backend = session.execute(select(func.pg_backend_pid())).scalar_one()
            with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [backend])
            insert_rows(session, OutboxMessage, rows)
        assert is_store_unreachable(caught.value), repr(caught.value)
        with store.transaction() as session:  # the pool gave up the dead connection: the next transaction works
            insert_rows(session, OutboxMessage, rows)
        with store.read() as session:
            assert len(session.scalars(select(OutboxMessage)).all()) == 1


def test_json_columns_keep_unicode_and_take_what_the_fast_serialiser_refuses() -> None:
    from broker.store.json_codec import dumps_text

    document = {"street": "Rue de l'Église", "n": [1, 2.5, None, True], "nested": {"k": "€"}}
    assert json.loads(dumps_text(document)) == document
    # Only a json.loads upstream lets a lone surrogate through; the json module still writes it (escaped).
    assert dumps_text({"odd": "\ud800"}) == '{"odd": "\\ud800"}'


def test_references_are_inserted_replaced_and_left_alone_when_unchanged(store: Store) -> None:
    from broker.store.references import remember_references
    from broker.store.tables import CaseRecord, ExternalRef

    later = NOW.replace(hour=11)
    with store.transaction() as session:
        insert_rows(session, CaseRecord, [
            {"id": f"pk-{n}", "source": "crm", "case_id": f"C-{n}", "service_code": "highways.pothole",
             "status": "open", "snapshot": {}, "created_at": NOW, "updated_at": NOW} for n in range(3)])
        remember_references(session, {("pk-0", "confirm"): "ENQ-1", ("pk-1", "confirm"): "ENQ-2"}, NOW)
    with store.transaction() as session:
        remember_references(session, {("pk-0", "confirm"): "ENQ-1", ("pk-1", "confirm"): "ENQ-2b",
                                       ("pk-2", "confirm"): "R" * 250}, later)
    with store.read() as session:
        stored = {row.case_pk: (row.reference, row.recorded_at) for row in session.scalars(select(ExternalRef))}
    assert stored == {"pk-0": ("ENQ-1", NOW), "pk-1": ("ENQ-2b", later), "pk-2": ("R" * 200, later)}
