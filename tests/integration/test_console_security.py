"""The support console as a viewer, a careless link or a password guesser would use it, through the real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from support.console import PASSWORD, officer_client
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import Answer, WebhookReceiver

from broker.console.accounts import TooManyAttempts, create_user, sign_in
from broker.failures.queries import ListFilter, failed_page
from broker.store.failures import record_intake_failure
from broker.store.tables import FailedMessage


def test_a_replay_refused_again_stores_no_value_from_the_message(broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with()
    body = case_created("VIEW-1")
    body["case"]["reporter"]["person"]["email"] = "ada.lovelace@example"  # no dot in the domain: refused
    failed_id = record_intake_failure(running.broker.store, reason="invalid_envelope", error_text="(first refusal)",
                                      raw_body=json.dumps(body).encode(), event_id=body["event_id"])
    operator = officer_client(running.broker.store, running.base_url, "otto", "operator")
    viewer = officer_client(running.broker.store, running.base_url, "vera", "viewer")
    replayed = operator.post(f"/v1/console/failed/{failed_id}/replay")
    assert replayed.json() == {"outcome": "still refused: invalid_envelope"}
    with running.broker.store.read() as session:
        stored = session.get_one(FailedMessage, failed_id)
    assert stored.error_text == "case.reporter.person.person.email: value is not a valid email address"
    assert "input_value" not in stored.error_text and "lovelace" not in stored.cause
    shown = viewer.get(f"/v1/console/failed/{failed_id}").text + viewer.get(f"/console/failed/{failed_id}").text
    assert "lovelace" not in shown.lower()
    operator.close()
    viewer.close()


def test_viewers_see_neither_the_answer_that_echoes_the_message_nor_the_attributes(
        broker_with: Callable[..., RunningBroker], receiver: WebhookReceiver) -> None:
    running = broker_with()
    description = "Deep pothole outside number 12, where Mrs Ada Lovelace parks her car every evening"
    receiver.answer("/highways", Answer(422, {"error": f"refused: {description[:40]}"}))
    running.post_case(case_created("VIEW-2", description=description,
                                   attributes={"caller_said": "my neighbour Charles keeps calling"}))
    running.wait_until(lambda: bool(failed_page(running.broker.store, ListFilter(case_id="VIEW-2")).rows),
                       what="the failure")
    [row] = failed_page(running.broker.store, ListFilter(case_id="VIEW-2")).rows
    operator = officer_client(running.broker.store, running.base_url, "otto", "operator")
    viewer = officer_client(running.broker.store, running.base_url, "vera", "viewer")
    as_operator = operator.get(f"/v1/console/failed/{row.id}").json()
    assert "Deep pothole outside" in as_operator["response"]  # operators see it all
    assert as_operator["message"]["case"]["attributes"]["caller_said"].startswith("my neighbour")
    as_viewer = viewer.get(f"/v1/console/failed/{row.id}")
    page = viewer.get(f"/console/failed/{row.id}").text
    timeline = viewer.get("/v1/console/cases", params={"q": "VIEW-2"}).text
    for shown in (as_viewer.text, page, timeline):
        assert "Lovelace" not in shown and "Charles" not in shown and "Deep pothole" not in shown
    detail = as_viewer.json()
    assert detail["response"] == "(hidden: the system's answer may quote personal data)"
    assert "Deep pothole outside" in as_operator["failed"]["error_text"]  # the target's words, for operators
    assert detail["failed"]["error_text"].startswith("HTTP 422 from ")  # what went wrong, for viewers too
    assert detail["failed"]["error_text"].endswith("(hidden: the system's answer may quote personal data)")
    assert detail["message"]["case"]["attributes"] == {"caller_said": "(hidden: personal data)"}
    operator.close()
    viewer.close()


@pytest.mark.parametrize("path", [
    "/console/failed?since=garbage", "/console/failed?until=2026-13-45", "/console/failed?until=9999-12-31",
    "/console/groups?since=yesterday", f"/console/failed?page={2**63 - 1}", f"/console/failed/{2**70}",
    f"/console/deliveries?target=highways&page={2**63 - 1}", f"/v1/console/failed?page={2**63 - 1}",
    "/v1/console/failed?since=garbage", f"/v1/console/failed/{2**63}", f"/v1/console/replay-jobs/{2**64}",
    f"/console/replay/{2**64}",
])
def test_odd_input_is_a_clear_refusal_never_a_server_error(broker_with: Callable[..., RunningBroker],
                                                             path: str) -> None:
    running = broker_with()
    viewer = officer_client(running.broker.store, running.base_url, "vera", "viewer")
    response = viewer.get(path)
    viewer.close()
    assert response.status_code < 500, response.text
    if "since=garbage" in path and path.startswith("/console"):
        assert response.status_code == 422 and "since: &#39;garbage&#39; is not a date" in response.text


def test_a_large_page_number_shows_the_last_page(broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with()
    viewer = officer_client(running.broker.store, running.base_url, "vera", "viewer")
    answer = viewer.get("/v1/console/failed", params={"page": 999_999})
    viewer.close()
    assert answer.status_code == 200 and answer.json()["page"] == 1


def test_a_done_banner_comes_from_the_session_never_from_the_link(broker_with: Callable[..., RunningBroker],
                                                                   receiver: WebhookReceiver) -> None:
    running = broker_with()
    receiver.answer("/highways", Answer(422, {"error": "street not adopted"}))
    running.post_case(case_created("FLASH-1"))
    running.wait_until(lambda: bool(failed_page(running.broker.store, ListFilter(case_id="FLASH-1")).rows),
                       what="the failure")
    [row] = failed_page(running.broker.store, ListFilter(case_id="FLASH-1")).rows
    operator = officer_client(running.broker.store, running.base_url, "otto", "operator")
    forged = operator.get(f"/console/failed/{row.id}", params={"done": "Call 0800 000 000 to confirm your password"})
    assert "0800" not in forged.text and 'id="outcome"' not in forged.text
    replayed = operator.post(f"/console/failed/{row.id}/replay", data={"csrf_token": operator.headers["X-CSRF-Token"]})
    assert replayed.status_code == 303 and replayed.headers["location"] == f"/console/failed/{row.id}"
    first = operator.get(f"/console/failed/{row.id}").text
    assert 'id="outcome">delivery to highways queued again' in first
    assert 'id="outcome"' not in operator.get(f"/console/failed/{row.id}").text  # said once
    operator.close()


def test_failed_sign_ins_slow_their_source_down_and_never_lock_the_account(
        broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with(console_sign_in_failures=3, console_sign_in_window_seconds=60)
    store = running.broker.store
    create_user(store, "root-admin", "admin", PASSWORD)
    with httpx.Client(base_url=running.base_url) as attacker:
        for _ in range(3):
            wrong = attacker.post("/v1/console/session", json={"name": "root-admin", "password": "guess"})
            assert wrong.status_code == 401
        throttled = attacker.post("/v1/console/session", json={"name": "root-admin", "password": PASSWORD})
        assert throttled.status_code == 429 and 50 <= int(throttled.headers["retry-after"]) <= 60
        page = attacker.get("/console/sign-in")
        form = attacker.post("/console/sign-in", data={"name": "root-admin", "password": PASSWORD,
                                                       "csrf_token": page.cookies["casebridge_sign_in"]})
        assert form.status_code == 429 and "retry-after" in form.headers
    # The account itself is not locked: the administrator signs in from their own desk at once.
    assert sign_in(store, "root-admin", PASSWORD, "10.1.2.3", max_failures=3, window=timedelta(seconds=60))
    with pytest.raises(TooManyAttempts):
        sign_in(store, "root-admin", PASSWORD, "127.0.0.1", max_failures=3, window=timedelta(seconds=60))
    with store.read() as session:
        assert session.scalars(select(FailedMessage)).all() == []
