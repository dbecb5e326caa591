"""The posting routes' fast path answers exactly as the FastAPI routes do: the same request to a broker with it and
to one without gets the same status, content type and body, and only well-formed envelopes skip the routes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send
from support.envelopes import case_created, envelope
from support.harness import RunningBroker

from broker.store.tables import CaseRecord, EventRecord

BASE_URL = "http://casebridge.test"


def _requests() -> list[tuple[str, str, dict[str, Any]]]:
    """(what it is, path, httpx keyword arguments): happy paths and every kind of refusal."""
    first = case_created("FAST-1")
    note = envelope("case.note_added", case={"case_id": "FAST-1"}, note={"text": "Resident called again"})
    return [
        ("a new case", "/v1/cases", {"json": first}),
        ("the same event again", "/v1/cases", {"json": first}),
        ("a follow-up", "/v1/cases/FAST-1/events", {"json": note}),
        ("a follow-up for another case than the URL's", "/v1/cases/FAST-2/events",
         {"json": envelope("case.note_added", case={"case_id": "FAST-1"}, note={"text": "x"})}),
        ("another system's case", "/v1/cases", {"json": case_created("FAST-3", source="portal")}),
        ("an envelope missing a field", "/v1/cases",
         {"json": {key: value for key, value in case_created("FAST-4").items() if key != "occurred_at"}}),
        ("malformed JSON", "/v1/cases",
         {"content": b'{"event_id": ', "headers": {"content-type": "application/json"}}),
        ("JSON sent as text", "/v1/cases",
         {"content": json.dumps(case_created("FAST-5")).encode(), "headers": {"content-type": "text/plain"}}),
        ("an idempotency key too long", "/v1/cases",
         {"json": case_created("FAST-6"), "headers": {"idempotency-key": "k" * 201}}),
        ("an unknown service (refused by intake)", "/v1/cases",
         {"json": case_created("FAST-7", service_code="highways.unheard_of")}),
        ("a case with an idempotency key", "/v1/cases",
         {"json": case_created("FAST-8"), "headers": {"idempotency-key": "order-8"}}),
        ("the key again with another body", "/v1/cases",
         {"json": case_created("FAST-9"), "headers": {"idempotency-key": "order-8"}}),
    ]


#: The requests the FastAPI routes must still see on the fast broker: everything that is not a usable envelope.
ROUTED = {"a follow-up for another case than the URL's", "another system's case", "an envelope missing a field",
          "malformed JSON", "JSON sent as text", "an idempotency key too long"}


def _count_route_calls(running: RunningBroker, seen: list[str]) -> None:
    """Wrap the posting routes of the running app, noting each path a route handles."""
    app = running.server.config.app
    for route in app.router.routes:
        if isinstance(route, APIRoute) and "POST" in route.methods and route.path.startswith("/v1/cases"):
            route.app = _noting(route.app, seen)


def _noting(inner: ASGIApp, seen: list[str]) -> ASGIApp:
    async def noted(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await inner(scope, receive, send)

    return noted


def _answer(response: httpx.Response) -> tuple[int, str, Any]:
    return response.status_code, response.headers["content-type"], response.json()


def test_the_fast_path_answers_every_request_as_the_routes_do(broker_with: Callable[..., RunningBroker]) -> None:
    fast = broker_with(public_base_url=BASE_URL)
    routed = broker_with(public_base_url=BASE_URL, api_fast_intake=False)
    seen: list[str] = []
    seen_without: list[str] = []
    _count_route_calls(fast, seen)
    _count_route_calls(routed, seen_without)
    answers: dict[str, tuple[int, str, Any]] = {}
    for what, path, request in _requests():
        with_fast_path = _answer(fast.client.post(path, **request))
        without = _answer(routed.client.post(path, **request))
        assert with_fast_path == without, what
        answers[what] = with_fast_path

    assert answers["a new case"][0] == 202 and answers["the same event again"][2]["duplicate"] is True
    assert answers["a new case"][2]["status_url"] == f"{BASE_URL}/v1/cases/FAST-1"
    assert answers["a follow-up"][0] == 202
    assert answers["another system's case"][0] == 403
    assert answers["malformed JSON"][0] == 400
    assert answers["an envelope missing a field"][2]["errors"][0]["field"] == "occurred_at"
    assert answers["an unknown service (refused by intake)"][0] == 422
    assert answers["the key again with another body"][0] == 409
    assert len(seen_without) == len(_requests()), "without the fast path every request goes through the routes"
    assert len(seen) == len(ROUTED), f"the routes handled {len(seen)} requests: {seen}"
    assert seen.count("/v1/cases/FAST-2/events") == 1 and "/v1/cases/FAST-1/events" not in seen
    assert _stored(fast) == _stored(routed) == {"FAST-1": 2, "FAST-8": 1}


def _stored(running: RunningBroker) -> dict[str, int]:
    """Each stored case and the number of its events."""
    with running.broker.store.read() as session:
        rows = session.execute(select(CaseRecord.case_id, func.count(EventRecord.event_id)).join(
            EventRecord, EventRecord.case_pk == CaseRecord.id).group_by(CaseRecord.case_id))
        return {case_id: count for case_id, count in rows}
