"""A thousand cases posted concurrently: every one delivered exactly once, every one with a full timeline."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import WebhookReceiver

from broker.store.tables import AuditEntry, CaseRecord

pytestmark = [pytest.mark.soak]

CASES = 1_000


@pytest.mark.slow
def test_thousand_cases_each_delivered_once_with_full_timeline(running: RunningBroker,
                                                               receiver: WebhookReceiver) -> None:
    bodies = [case_created(f"BULK-{n:04d}") for n in range(CASES)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda body: running.post_case(body).status_code, bodies))
    assert statuses == [202] * CASES

    receiver.wait_for(CASES, "/highways", timeout=180)
    assert running.wait_settled(timeout=180) == {"delivered": CASES}
    counts = receiver.event_counts("/highways")
    assert set(counts) == {body["event_id"] for body in bodies}
    assert max(counts.values()) == 1, "an event was delivered twice"

    with running.broker.store.read() as session:
        rows = session.execute(
            select(CaseRecord.case_id, AuditEntry.step).join(AuditEntry, AuditEntry.case_pk == CaseRecord.id)
            .order_by(AuditEntry.id)
        ).all()
    timelines: dict[str, list[str]] = defaultdict(list)
    for case_id, step in rows:
        timelines[case_id].append(step)
    assert len(timelines) == CASES
    incomplete = {case: steps for case, steps in timelines.items()
                  if steps != ["received", "validated", "routed", "delivered"]}
    assert incomplete == {}
