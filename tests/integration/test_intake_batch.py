"""Many events taken in at once (as the AMQP consumer does): decided in order, one transaction, nothing lost."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from support.envelopes import case_created, envelope, status_changed

from broker.config.loader import load_configuration
from broker.errors import IntakeRejected
from broker.intake.transaction import Intake, Receipt, Submission
from broker.model import parse_event
from broker.store.database import Store
from broker.store.tables import AuditEntry, CaseRecord, DeliveryRecord, EventRecord, OutboxMessage


def submission(document: dict[str, object]) -> Submission:
    import json

    return Submission(parse_event(json.dumps(document).encode()), "amqp", "system:crm")


def test_a_mixed_batch_is_decided_in_order(database_url: str, mappings_dir: Path) -> None:
    store = Store(database_url)
    store.migrate()
    intake = Intake(store, load_configuration(mappings_dir))
    first = case_created("B-1")
    batch = [
        first,
        status_changed("B-1", "in_progress"),                  # follows a create in the same batch
        case_created("B-1"),                                    # the case exists by now: 409
        first,                                                  # the same event again: the original receipt
        status_changed("B-404", "closed"),                     # no such case: 404
        case_created("B-2", service_code="highways.unicorns"),  # not in the catalogue: 422
        case_created("B-3", service_code="environment.noise"),
    ]
    outcomes = intake.accept_many([submission(document) for document in batch])

    accepted = [o for o in outcomes if isinstance(o, Receipt)]
    refused = [o for o in outcomes if isinstance(o, IntakeRejected)]
    assert [type(o).__name__ for o in outcomes] == ["Receipt", "Receipt", "IntakeRejected", "Receipt",
                                                    "CaseNotFound", "IntakeRejected", "Receipt"]
    assert [(r.status_code, r.field) for r in refused] == [(409, "case.case_id"), (404, "case.case_id"),
                                                           (422, "case.service_code")]
    assert accepted[2].duplicate and accepted[2].event_id == first["event_id"]
    assert accepted[0].case_pk == accepted[1].case_pk

    with store.read() as session:
        case = session.scalars(select(CaseRecord).where(CaseRecord.case_id == "B-1")).one()
        assert case.status == "in_progress"
        assert session.scalars(select(EventRecord.sequence).where(EventRecord.case_pk == case.id)
                               .order_by(EventRecord.sequence)).all() == [1, 2]
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 3
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 9
        deliveries = session.scalars(select(DeliveryRecord).order_by(DeliveryRecord.id)).all()
        assert [(d.target, d.state) for d in deliveries] == [("highways", "pending"), ("highways", "pending"),
                                                             ("environment", "pending")]
        pointers = [m.body["delivery_id"] for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
        assert pointers == [d.id for d in deliveries]
    store.dispose()


def test_the_same_event_twice_in_one_batch_is_recorded_once(database_url: str, mappings_dir: Path) -> None:
    store = Store(database_url)
    store.migrate()
    intake = Intake(store, load_configuration(mappings_dir))
    created = case_created("D-1")
    changed = {**created, "case": {**created["case"], "description": "a different text"}}  # type: ignore[dict-item]
    outcomes = intake.accept_many([submission(created), submission(created), submission(changed)])
    assert isinstance(outcomes[0], Receipt) and not outcomes[0].duplicate
    assert isinstance(outcomes[1], Receipt) and outcomes[1].duplicate
    assert isinstance(outcomes[2], IntakeRejected) and outcomes[2].status_code == 409
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 1
    later = intake.accept_many([submission(envelope("case.note_added", case={"case_id": "D-1"},
                                                    note={"text": "called again"}))])
    assert isinstance(later[0], Receipt) and later[0].case_pk == outcomes[0].case_pk
    store.dispose()
