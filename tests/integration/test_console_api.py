"""The support console's operations and roles, through its JSON API, on both stores."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from support.console import PASSWORD, officer_client
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import Answer, WebhookReceiver

from broker.failures.causes import normalise_error
from broker.failures.queries import ListFilter, failed_page
from broker.store.failures import record_intake_failure
from broker.store.tables import AuditEntry, EventRecord, FailedMessage, MessageEdit

pytestmark = pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)


@pytest.fixture
def operator(running: RunningBroker) -> Iterator[httpx.Client]:
    client = officer_client(running.broker.store, running.base_url, "olive", "operator")
    yield client
    client.close()


@pytest.fixture
def viewer(running: RunningBroker) -> Iterator[httpx.Client]:
    client = officer_client(running.broker.store, running.base_url, "victor", "viewer")
    yield client
    client.close()


def refused_case(running: RunningBroker, receiver: WebhookReceiver, case_id: str, error: str = "street not adopted",
                 **fields: object) -> int:
    """Post a case the highways target refuses once (422); returns its failed message's id."""
    receiver.answer("/highways", Answer(422, {"error": error}))
    running.post_case(case_created(case_id, **fields))
    running.wait_until(lambda: _open(running, case_id) is not None, what=f"{case_id} to fail")
    failed_id = _open(running, case_id)
    assert failed_id is not None
    return failed_id


def _open(running: RunningBroker, case_id: str) -> int | None:
    rows = failed_page(running.broker.store, ListFilter(case_id=case_id)).rows
    return rows[0].id if rows else None


def test_a_viewer_cannot_replay_an_operator_can_and_the_timeline_names_them(
        running: RunningBroker, receiver: WebhookReceiver, operator: httpx.Client, viewer: httpx.Client) -> None:
    failed_id = refused_case(running, receiver, "CON-1")

    listed = viewer.get("/v1/console/failed", params={"target": "highways"}).json()
    assert listed["total"] == 1 and listed["rows"][0]["reason"] == "http_422"
    refused = viewer.post(f"/v1/console/failed/{failed_id}/replay")
    assert refused.status_code == 403 and "operator" in refused.json()["message"]

    replayed = operator.post(f"/v1/console/failed/{failed_id}/replay")
    assert replayed.status_code == 200, replayed.text
    running.wait_until(lambda: running.delivery_states() == {"delivered": 1}, what="the replayed delivery")

    [found] = viewer.get("/v1/console/cases", params={"q": "CON-1"}).json()
    steps = [(entry["step"], entry["actor"]) for entry in found["entries"]]
    assert steps.index(("replayed", "user:olive")) < steps.index(("delivered", "target:highways"))
    again = operator.post(f"/v1/console/failed/{failed_id}/replay")
    assert again.status_code == 409  # already replayed: refused, not repeated


def test_edit_and_replay_keeps_both_versions_and_audits_the_difference(
        running: RunningBroker, receiver: WebhookReceiver, operator: httpx.Client) -> None:
    failed_id = refused_case(running, receiver, "CON-2", error="EnquiryX is required")

    bad = operator.post(f"/v1/console/failed/{failed_id}/edit", json={"fields": {"case.location.easting": "north"}})
    assert bad.status_code == 422 and "case.location.easting" in bad.json()["errors"]
    invalid = operator.post(f"/v1/console/failed/{failed_id}/edit",
                            json={"fields": {"case.location.easting": "9999999"}})
    assert invalid.status_code == 422  # the canonical model bounds eastings to Great Britain

    edited = operator.post(f"/v1/console/failed/{failed_id}/edit",
                           json={"fields": {"case.location.easting": "530123.5", "case.service_code":
                                            "highways.street_light"}})
    assert edited.status_code == 200, edited.text
    running.wait_until(lambda: running.delivery_states() == {"delivered": 1}, what="the edited delivery")
    sent = receiver.on("/highways")[-1].body["event"]["case"]
    assert (sent["location"]["easting"], sent["service_code"]) == (530123.5, "highways.street_light")

    with running.broker.store.read() as session:
        edit = session.scalars(select(MessageEdit)).one()
        audit = session.scalars(select(AuditEntry).where(AuditEntry.step == "edited")).one()
        event = session.get_one(EventRecord, edit.original["event_id"])
    assert edit.original["case"]["location"]["easting"] == 530000.0
    assert edit.edited["case"]["location"]["easting"] == 530123.5
    assert event.payload == edit.edited
    assert audit.actor == "user:olive"
    assert {"field": "case.location.easting", "from": 530000.0, "to": 530123.5} in audit.detail["diff"]
    assert {change["field"] for change in audit.detail["diff"]} == {"case.location.easting", "case.service_code"}


def test_discard_needs_a_reason(running: RunningBroker, receiver: WebhookReceiver, operator: httpx.Client,
                                viewer: httpx.Client) -> None:
    failed_id = refused_case(running, receiver, "CON-3")
    assert viewer.post(f"/v1/console/failed/{failed_id}/discard", json={"reason": "x"}).status_code == 403
    blank = operator.post(f"/v1/console/failed/{failed_id}/discard", json={"reason": "  "})
    assert blank.status_code == 422 and "why" in blank.json()["message"]
    done = operator.post(f"/v1/console/failed/{failed_id}/discard", json={"reason": "logged by phone in Confirm"})
    assert done.status_code == 200
    detail = operator.get(f"/v1/console/failed/{failed_id}").json()
    assert detail["failed"]["state"] == "discarded"
    assert detail["failed"]["resolution_note"] == "logged by phone in Confirm"
    assert ("discarded", "user:olive") in [(e["step"], e["actor"]) for e in detail["timeline"]]


def test_without_the_csrf_token_a_change_is_refused(running: RunningBroker, receiver: WebhookReceiver,
                                                    operator: httpx.Client) -> None:
    failed_id = refused_case(running, receiver, "CON-4")
    token = operator.headers.pop("X-CSRF-Token")
    assert operator.post(f"/v1/console/failed/{failed_id}/replay").status_code == 403
    assert operator.post(f"/v1/console/failed/{failed_id}/replay",
                         headers={"X-CSRF-Token": "forged"}).status_code == 403
    # The HTML form is refused the same way, with or without a wrong token field.
    assert operator.post(f"/console/failed/{failed_id}/replay", data={"csrf_token": "forged"}).status_code == 403
    assert operator.post(f"/console/failed/{failed_id}/discard", data={"reason": "no token"}).status_code == 403
    assert operator.get(f"/v1/console/failed/{failed_id}").json()["failed"]["state"] == "open"
    assert operator.post(f"/console/failed/{failed_id}/replay", data={"csrf_token": token}).status_code == 303


def test_viewers_do_not_see_personal_data_operators_do(running: RunningBroker, receiver: WebhookReceiver,
                                                        operator: httpx.Client, viewer: httpx.Client) -> None:
    failed_id = refused_case(running, receiver, "CON-5")
    as_viewer = viewer.get(f"/v1/console/failed/{failed_id}").text
    as_operator = operator.get(f"/v1/console/failed/{failed_id}").json()
    assert "ada@example.org" not in as_viewer and "Deep pothole" not in as_viewer
    assert as_operator["message"]["case"]["reporter"]["person"]["email"] == "ada@example.org"
    assert as_operator["response"] and "street not adopted" in as_operator["response"]
    page = viewer.get(f"/console/failed/{failed_id}").text
    assert "ada@example.org" not in page and "Replay as it is" not in page
    assert viewer.get("/v1/console/cases", params={"q": "ada@example.org"}).json() == []
    [found] = operator.get("/v1/console/cases", params={"q": "ada@example.org"}).json()
    assert found["case_id"] == "CON-5"


def test_failures_with_one_cause_are_one_group(running: RunningBroker, viewer: httpx.Client) -> None:
    for n in range(3):
        record_intake_failure(running.broker.store, reason="rejected", error_text=f"case.case_id: no case 'CON-G-{n}'",
                              raw_body=b"{}", event_id=None)
    record_intake_failure(running.broker.store, reason="rejected", error_text="source: unknown system 'portal'",
                          raw_body=b"{}", event_id=None)

    groups = viewer.get("/v1/console/groups").json()
    assert sorted((group["count"], group["cause"]) for group in groups) == [
        (1, "source: unknown system '…'"), (3, "case.case_id: no case '…'")]
    [big] = [group for group in groups if group["count"] == 3]
    members = viewer.get("/v1/console/failed", params={"reason": "rejected", "cause": big["cause"]}).json()
    assert members["total"] == 3


def test_a_bulk_replay_runs_in_batches_and_shows_its_outcome(
        running: RunningBroker, receiver: WebhookReceiver, operator: httpx.Client) -> None:
    receiver.answer("/highways", *[Answer(422, {"error": "street not adopted"})] * 3)
    for n in range(3):
        running.post_case(case_created(f"CON-B-{n}"))
    running.post_case(case_created("CON-B-env", service_code="environment.noise"))
    receiver.answer("/environment", *[Answer(400, {"error": "no"})])
    running.wait_until(lambda: running.delivery_states().get("failed") == 4, what="four failures")

    selection = {"target": "highways", "batch_size": 1, "pause_seconds": 0.2}
    preview = operator.post("/v1/console/replay-jobs/dry-run", json=selection).json()
    assert preview == {"count": 3, "targets": {"highways": 3}}
    everything = operator.post("/v1/console/replay-jobs/dry-run", json={}).json()
    assert everything == {"count": 4, "targets": {"highways": 3, "environment": 1}}
    started = operator.post("/v1/console/replay-jobs", json=selection)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]

    def finished() -> bool:
        job = operator.get(f"/v1/console/replay-jobs/{job_id}").json()
        return bool(job["state"] == "finished" and job["delivered"] == 3)

    running.wait_until(finished, timeout=60, what="the bulk replay to deliver")
    job = operator.get(f"/v1/console/replay-jobs/{job_id}").json()
    assert (job["total"], job["done"], job["refused"], job["failed_again"]) == (3, 3, 0, 0)
    with running.broker.store.read() as session:
        replays = session.scalars(select(AuditEntry.at).where(AuditEntry.step == "replayed")
                                  .order_by(AuditEntry.at)).all()
    assert len(replays) == 3 and (replays[-1] - replays[0]).total_seconds() >= 0.4  # batches of 1, 0.2 s apart
    remaining = operator.get("/v1/console/failed").json()
    assert [row["target"] for row in remaining["rows"]] == ["environment"]


def test_a_bulk_replay_can_be_cancelled_and_warns_of_new_failures(
        running: RunningBroker, receiver: WebhookReceiver, operator: httpx.Client) -> None:
    receiver.answer("/highways", *[Answer(422, {"error": "refused"})] * 3)
    for n in range(3):
        running.post_case(case_created(f"CON-C-{n}"))
    running.wait_until(lambda: running.delivery_states().get("failed") == 3, what="three failures")
    receiver.answer("/highways", *[Answer(422, {"error": "refused again"})] * 10)
    started = operator.post("/v1/console/replay-jobs", json={"target": "highways", "batch_size": 1,
                                                              "pause_seconds": 30}).json()
    running.wait_until(lambda: operator.get(f"/v1/console/replay-jobs/{started['id']}").json()["done"] == 1,
                       what="the first batch")
    running.post_case(case_created("CON-C-new"))
    running.wait_until(lambda: operator.get(f"/v1/console/replay-jobs/{started['id']}").json()["new_failures"] >= 1,
                       what="the new failure to be counted")
    assert operator.post(f"/v1/console/replay-jobs/{started['id']}/cancel").json() == {"outcome": "cancelled"}
    job = operator.get(f"/v1/console/replay-jobs/{started['id']}").json()
    assert job["state"] == "cancelled" and job["done"] == 1 and job["failed_again"] == 1


def test_session_cookie_flags_and_sign_in_rate_limit(running: RunningBroker) -> None:
    from support.console import officer_client as make

    make(running.broker.store, running.base_url, "rita", "viewer").close()
    with httpx.Client(base_url=running.base_url) as client:
        response = client.post("/v1/console/session", json={"name": "rita", "password": PASSWORD})
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        behind_tls = client.post("/v1/console/session", json={"name": "rita", "password": PASSWORD},
                                 headers={"X-Forwarded-Proto": "https"})
        assert "secure" in behind_tls.headers["set-cookie"].lower()
        page = client.get("/console")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for _ in range(10):
            assert client.post("/v1/console/session", json={"name": "rita", "password": "wrong"}).status_code == 401
        blocked = client.post("/v1/console/session", json={"name": "rita", "password": PASSWORD})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 800
    with httpx.Client(base_url=running.base_url) as anonymous:
        assert anonymous.get("/v1/console/failed").status_code == 401
        assert anonymous.get("/console/failed").status_code == 303


def test_replaying_a_selection_sends_only_the_ticked_messages(running: RunningBroker, receiver: WebhookReceiver,
                                                              operator: httpx.Client) -> None:
    ids = [refused_case(running, receiver, f"CON-S-{n}") for n in range(3)]
    token = operator.headers["X-CSRF-Token"]
    nothing = operator.post("/console/replay/preview", data={"csrf_token": token, "scope": "selected"})
    assert nothing.status_code == 200 and "Nothing to replay" in nothing.text  # nothing ticked is not everything
    ticked = operator.post("/console/replay/preview", data={"csrf_token": token, "scope": "selected",
                                                            "ids": [str(ids[0]), str(ids[2])]})
    assert "<strong>2</strong> open failed messages will be sent again" in " ".join(ticked.text.split())
    assert "2 to highways" in ticked.text
    started = operator.post("/console/replay/start", data={"csrf_token": token, "scope": "selected",
                                                           "ids": [str(ids[0]), str(ids[2])], "batch_size": "5",
                                                           "pause_seconds": "0"})
    assert started.status_code == 303 and started.headers["location"].startswith("/console/replay/")
    job_id = started.headers["location"].rsplit("/", 1)[-1]
    running.wait_until(lambda: operator.get(f"/v1/console/replay-jobs/{job_id}").json()["delivered"] == 2,
                       what="the two ticked messages to be delivered")
    [left] = operator.get("/v1/console/failed").json()["rows"]
    assert left["id"] == ids[1]


def test_a_mistyped_service_code_refused_on_arrival_is_corrected_and_taken_in(
        running: RunningBroker, operator: httpx.Client) -> None:
    import json

    body = case_created("CON-T-1", service_code="highways.pothol")
    failed_id = record_intake_failure(running.broker.store, reason="rejected",
                                      error_text="case.service_code: unknown service 'highways.pothol'",
                                      raw_body=json.dumps(body).encode(), event_id=body["event_id"])
    detail = operator.get(f"/v1/console/failed/{failed_id}").json()
    assert detail["editable"] and detail["message"]["case"]["service_code"] == "highways.pothol"
    as_it_is = operator.post(f"/v1/console/failed/{failed_id}/replay").json()
    assert as_it_is["outcome"] == "still refused: rejected"
    with running.broker.store.read() as session:
        refused = session.get_one(FailedMessage, failed_id)
        assert refused.attempts == 2 and refused.cause == normalise_error(refused.error_text)
    fixed = operator.post(f"/v1/console/failed/{failed_id}/edit",
                          json={"fields": {"case.service_code": "highways.pothole"}})
    assert fixed.status_code == 200 and "accepted as case CON-T-1" in fixed.json()["outcome"]
    running.wait_until(lambda: running.delivery_states() == {"delivered": 1}, what="the corrected case")
    with running.broker.store.read() as session:
        edit = session.scalars(select(MessageEdit).where(MessageEdit.failed_id == failed_id)).one()
    assert edit.original["case"]["service_code"] == "highways.pothol"
    assert edit.edited["case"]["service_code"] == "highways.pothole"
    [found] = operator.get("/v1/console/cases", params={"q": "CON-T-1"}).json()
    assert ("replayed", "user:olive") in [(e["step"], e["actor"]) for e in found["entries"]]


def test_the_sign_in_form_needs_its_token(running: RunningBroker) -> None:
    from support.console import officer_client as make

    make(running.broker.store, running.base_url, "sid", "viewer").close()
    with httpx.Client(base_url=running.base_url) as browser:
        refused = browser.post("/console/sign-in", data={"name": "sid", "password": PASSWORD})
        assert refused.status_code == 403 and "session" not in refused.headers.get("set-cookie", "")
        form = browser.get("/console/sign-in")
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        assert browser.post("/console/sign-in", data={"name": "sid", "password": "wrong", "csrf_token": token}
                            ).status_code == 401
        signed_in = browser.post("/console/sign-in", data={"name": "sid", "password": PASSWORD, "csrf_token": token})
        assert signed_in.status_code == 303 and "httponly" in signed_in.headers["set-cookie"].lower()
        assert browser.get("/console").status_code == 200
        csrf = browser.get("/console").text.split('name="csrf_token" value="')[1].split('"')[0]
        assert browser.post("/console/sign-out", data={"csrf_token": csrf}).status_code == 303
        assert browser.get("/console").status_code == 303  # signed out: back to the sign-in page


def test_secure_cookies_can_be_forced_either_way(running: RunningBroker) -> None:
    from starlette.requests import Request

    from broker.console.security import ConsoleContext, is_secure

    def request(scheme: str) -> Request:
        return Request({"type": "http", "scheme": scheme, "headers": [], "path": "/console", "server": ("h", 80)})

    def context(secure: bool | None) -> ConsoleContext:
        return ConsoleContext(store=running.broker.store, intake=running.broker.intake, targets=[],
                              schedules=[], secure_cookies=secure)

    assert is_secure(context(None), request("https")) and not is_secure(context(None), request("http"))
    assert is_secure(context(True), request("http"))
    assert not is_secure(context(False), request("https"))
    assert running.settings.console_secure_cookies is None  # the default follows the request
