"""Requests arriving together share one intake transaction, each still answered with its own outcome only after the
commit that holds it; past ``api_max_in_flight`` the API answers 503 at once instead of queueing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from support.envelopes import case_created
from support.harness import RunningBroker

from broker.store.tables import CaseRecord


def _transactions() -> tuple[float, float]:
    """(intake transactions, events they recorded) so far in this process."""
    count = REGISTRY.get_sample_value("casebridge_intake_transaction_events_count") or 0.0
    events = REGISTRY.get_sample_value("casebridge_intake_transaction_events_sum") or 0.0
    return count, events


async def _post_all(running: RunningBroker, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {running.api_key}"},
                                 limits=httpx.Limits(max_connections=len(bodies))) as client:
        return list(await asyncio.gather(*(client.post("/v1/cases", json=body) for body in bodies)))


def _stored_cases(running: RunningBroker) -> set[str]:
    with running.broker.store.read() as session:
        return set(session.scalars(select(CaseRecord.case_id)))


def test_concurrent_requests_share_transactions_and_each_gets_its_own_receipt(
        broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with(api_group_commit_ms=20)
    before = _transactions()
    bodies = [case_created(f"GROUP-{n}") for n in range(60)]
    bodies.append(case_created("GROUP-BAD", service_code="highways.unheard_of"))  # refused inside a shared batch
    answers = asyncio.run(_post_all(running, bodies))

    accepted = [answer for answer in answers if answer.status_code == 202]
    assert len(accepted) == 60
    assert sorted(answer.json()["case_id"] for answer in accepted) == sorted(f"GROUP-{n}" for n in range(60))
    refused = answers[-1]
    assert refused.status_code == 422, refused.text  # the others were not held back by it
    assert refused.json()["errors"][0]["field"] == "case.service_code"
    after = _transactions()
    transactions, events = after[0] - before[0], after[1] - before[1]
    assert events == 61  # the refused one was decided within a shared transaction too
    assert transactions < 61 / 3, f"{transactions} transactions for 61 events: requests did not share commits"
    assert _stored_cases(running) == {f"GROUP-{n}" for n in range(60)}
    assert running.wait_settled() == {"delivered": 60}


def test_an_answered_request_is_already_committed(broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with(api_group_commit_ms=50)
    answer = running.post_case(case_created("COMMITTED-1"))
    assert answer.status_code == 202
    with running.broker.store.read() as session:  # a fresh connection sees it the moment the answer arrives
        assert session.scalar(select(func.count()).select_from(CaseRecord)
                              .where(CaseRecord.case_id == "COMMITTED-1")) == 1


def test_without_group_commit_each_request_has_its_own_transaction(
        broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with(api_group_commit_ms=0)
    before = _transactions()
    answers = asyncio.run(_post_all(running, [case_created(f"SINGLE-{n}") for n in range(10)]))
    assert [answer.status_code for answer in answers] == [202] * 10
    after = _transactions()
    assert (after[0] - before[0], after[1] - before[1]) == (10, 10)


def test_past_the_in_flight_bound_requests_are_told_503_at_once_and_nothing_of_them_is_kept(
        broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with(api_group_commit_ms=100, api_max_in_flight=5)  # the linger keeps requests in flight
    answers = asyncio.run(_post_all(running, [case_created(f"BUSY-{n}") for n in range(40)]))

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) == {202, 503}
    assert 5 <= statuses.count(202) < 40
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error"] == "overloaded"
    kept = {answer.json()["case_id"] for answer in answers if answer.status_code == 202}
    assert _stored_cases(running) == kept
    retried = asyncio.run(_post_all(running, [case_created(f"BUSY-{n}") for n in range(40)
                                              if f"BUSY-{n}" not in kept][:5]))
    assert [answer.status_code for answer in retried] == [202] * len(retried)  # room again once they are done


def test_group_commit_on_each_store(broker_with: Callable[..., RunningBroker], database_url: str) -> None:
    running = broker_with(database_url=database_url, api_group_commit_ms=10)
    before = _transactions()
    answers = asyncio.run(_post_all(running, [case_created(f"PG-{n}") for n in range(50)]))
    assert [answer.status_code for answer in answers] == [202] * 50
    after = _transactions()
    assert after[1] - before[1] == 50 and after[0] - before[0] < 50 / 3
    assert _stored_cases(running) == {f"PG-{n}" for n in range(50)}
