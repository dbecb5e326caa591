"""Any sequence of status changes and notes, recorded however late after they happened, polled through any
sequence of overlapping windows, reaches FixMyStreet exactly once each: no change missed, none under two ids, none
dropped for an ``updated_datetime`` outside the window asked for, and the same id always with the same content.

Against the real endpoint and a real (SQLite) store; only the clock is the test's, so that hours pass in an instant.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.fixmystreet import FixMyStreet, Report, w3cdtf
from support.harness import REPO
from support.services import sqlite_database

from broker.config.loader import load_configuration
from broker.intake.transaction import Intake, Submission
from broker.model.case import CaseStatus
from broker.model.events import CaseNoteAdded, CaseStatusChanged
from broker.open311.app import Open311Context, open311_app
from broker.store.database import Store
from broker.store.keys import create_key
from broker.store.tables import CaseRecord


@dataclass(frozen=True)
class Change:
    """Something recorded ``gap`` seconds after the previous step, which happened ``late`` seconds before that."""

    gap: float
    late: float
    status: CaseStatus | None  # None: a note
    internal: bool = False


@dataclass(frozen=True)
class Poll:
    """A poll ``gap`` seconds after the previous step, its window reaching ``reach`` seconds before the end of the
    previous window (so consecutive windows overlap, as FixMyStreet's do)."""

    gap: float
    reach: float


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class Endpoint:
    """A store, its intake and the Open311 app, shared by the examples (each uses a system of its own)."""

    def __init__(self, folder: Path) -> None:
        self.store = Store(sqlite_database(folder / "property.db", migrated=True))
        self.intake = Intake(self.store, load_configuration(REPO / "mappings"))
        self.http = TestClient(open311_app(Open311Context(self.store, self.intake, lambda: None, "http://test")))


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    yield Endpoint(tmp_path_factory.mktemp("property"))


HOURS = 3600.0
changes = st.builds(Change, gap=st.floats(0, 3 * HOURS), late=st.floats(0, 3 * 24 * HOURS),
                    status=st.one_of(st.none(), st.sampled_from(list(CaseStatus))), internal=st.booleans())
polls = st.builds(Poll, gap=st.floats(0, 3 * HOURS), reach=st.floats(0, 3 * HOURS))
FIVE_MINUTES_FOR_TWO_HOURS = [Change(60, 0, CaseStatus.investigating), Change(1, 3 * HOURS, CaseStatus.fixed),
                              *(Poll(300, 2 * HOURS - 300) for _ in range(30)), Change(0.5, 0, None),
                              Poll(300, 24 * HOURS - 300)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(changes, polls), min_size=1, max_size=14), fraction=st.floats(0, 0.999999),
       microseconds=st.booleans())
@example(steps=FIVE_MINUTES_FOR_TWO_HOURS, fraction=0.75, microseconds=False)
# A window that starts inside the second a change was recorded in, after its fraction: the change, listed to the
# second, falls before the window's start and must not be listed in it (the window before listed it).
@example(steps=[Change(0.5, 0, CaseStatus.fixed), Poll(5, 0), Poll(1, 4.2)], fraction=0.2, microseconds=True)
def test_every_update_is_fetched_exactly_once_through_any_overlapping_windows(
        endpoint: Endpoint, steps: list[Change | Poll], fraction: float, microseconds: bool) -> None:
    """FixMyStreet asks for windows in whole seconds; another client may give them to the microsecond, and then
    overlaps them by a second at least, as updates are listed to the second (FixMyStreet compares the texts, so a
    fraction would put an update before a window starting in the same second)."""
    clock = Clock(datetime(2026, 11, 20, 8, 0, tzinfo=UTC) + timedelta(seconds=fraction))
    system = f"fms-{uuid.uuid4().hex[:12]}"
    client = FixMyStreet("http://testserver/", create_key(endpoint.store, system), http=endpoint.http)
    expected: dict[str, Any] = {}
    with patch("broker.intake.transaction.utc_now", clock), patch("broker.open311.app.utc_now", clock):
        report = Report(id=1, service_code="highways.pothole", title="Hole", detail="Deep")
        assert client.send(report), report.send_fail_reason
        with endpoint.store.read() as session:
            case = session.get_one(CaseRecord, (report.external_id or "").removeprefix("CB-"))
        previous_end = clock.now if microseconds else clock.now.replace(microsecond=0)
        for step in [*steps, Poll(1, 0)]:  # and a last poll, once everything is recorded
            clock.now += timedelta(seconds=step.gap)
            if isinstance(step, Change):
                event_id = record(endpoint, case, step, clock.now)
                if not (step.status is None and step.internal):
                    expected[event_id] = step
            else:
                end = clock.now if microseconds else clock.now.replace(microsecond=0)
                start = previous_end - timedelta(seconds=step.reach + (1 if microseconds else 0))
                client.fetch_updates(*(moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if microseconds else w3cdtf(moment)
                                       for moment in (start, end)))
                previous_end = end
    assert client.dropped == [], "an update outside the window asked for: FixMyStreet drops it"
    assert set(client.comments) == set(expected), "missed, or listed under another id"
    seen: dict[str, dict[str, Any]] = {}
    for item in client.fetched:
        assert seen.setdefault(item["update_id"], item) == item, "the same update changed between polls"


def record(endpoint: Endpoint, case: CaseRecord, step: Change, now: datetime) -> str:
    """The change as a LOB system's poll hands it to the intake (a note, or a status change)."""
    envelope = {"event_id": uuid.uuid4(), "occurred_at": now - timedelta(seconds=step.late), "source": "confirm",
                "case": {"case_id": case.case_id}}
    event = CaseNoteAdded.model_validate({**envelope, "note": {"text": "A note", "internal": step.internal}}) \
        if step.status is None else \
        CaseStatusChanged.model_validate({**envelope, "change": {"status": step.status, "reason": "Moved on",
                                                                 "external_status_code": "X1"}})
    [outcome] = endpoint.intake.accept_many([Submission(event, "poll", "target:confirm", case_pk=case.id)])
    assert not isinstance(outcome, Exception), outcome
    return str(event.event_id)


def test_listed_by_when_it_happened_a_late_change_would_be_missed() -> None:
    """Why updates are listed by when they were recorded: the same late change, had it been listed at the moment it
    happened, would fall outside every two-hour window asked for once it is recorded."""
    happened = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    recorded = happened + timedelta(hours=3)
    windows = [(recorded + timedelta(minutes=5 * n) - timedelta(hours=2), recorded + timedelta(minutes=5 * n))
               for n in range(1, 24)]
    assert not any(start <= happened <= end for start, end in windows)
    assert all(start <= recorded <= end for start, end in windows[:23])
