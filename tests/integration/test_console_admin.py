"""Administrators' page, error pages in words, and what viewers may not see or do."""

from __future__ import annotations

import json
from contextlib import closing

import httpx
import pytest
from sqlalchemy import select
from support.console import PASSWORD, officer_client
from support.envelopes import case_created, status_changed
from support.harness import RunningBroker
from support.receiver import Answer, WebhookReceiver

from broker.store.failures import record_intake_failure
from broker.store.tables import AuditEntry

pytestmark = pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)


def form(client: httpx.Client, path: str, **fields: str) -> httpx.Response:
    return client.post(path, data={"csrf_token": client.headers["X-CSRF-Token"], **fields})


def test_an_admin_manages_accounts_and_keys_and_each_change_is_audited(running: RunningBroker) -> None:
    store = running.broker.store
    with closing(officer_client(store, running.base_url, "ann", "admin")) as admin, \
            closing(officer_client(store, running.base_url, "otto", "operator")) as operator:
        assert "Accounts and keys" in admin.get("/console").text
        assert "Accounts and keys" not in operator.get("/console").text
        forbidden = operator.get("/console/admin")
        assert forbidden.status_code == 403 and "You cannot do that" in forbidden.text  # a page in words

        assert form(admin, "/console/admin/users", name="new.officer", role="viewer", password="short"
                    ).status_code == 422
        made = form(admin, "/console/admin/users", name="new.officer", role="viewer", password=PASSWORD)
        assert made.status_code == 303
        with httpx.Client(base_url=running.base_url) as newcomer:
            assert newcomer.post("/v1/console/session", json={"name": "new.officer", "password": PASSWORD}
                                 ).json()["role"] == "viewer"

        issued = form(admin, "/console/admin/keys", system="portal")
        key = issued.text.split('id="new-key">')[1].split("<")[0]
        assert key.startswith("cbk_")
        with httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {key}"}) as portal:
            assert portal.post("/v1/cases", json=case_created(source="portal")).status_code == 202
            key_id = admin.get("/console/admin").text.split('action="/console/admin/keys/')[-1].split("/")[0]
            assert form(admin, f"/console/admin/keys/{key_id}/revoke").status_code == 303
            assert portal.post("/v1/cases", json=case_created(source="portal")).status_code == 401

        page = admin.get("/console/admin").text
        otto_id = page.split("otto</td>")[1].split('action="/console/admin/users/')[1].split("/")[0]
        assert form(admin, f"/console/admin/users/{otto_id}/disable").status_code == 303
        assert operator.get("/v1/console/failed").status_code == 401  # signed out at once

    with store.read() as session:
        steps = {(entry.step, entry.actor) for entry in session.scalars(select(AuditEntry))}
    assert {("account_created", "user:ann"), ("api_key_created", "user:ann"), ("api_key_revoked", "user:ann"),
            ("account_disabled", "user:ann")} <= steps


def test_viewers_see_corrections_of_personal_fields_hidden(running: RunningBroker, receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(422, {"error": "refused"}))
    running.post_case(case_created("ADM-1"))
    running.wait_settled()
    store = running.broker.store
    with closing(officer_client(store, running.base_url, "olga", "operator")) as operator, \
            closing(officer_client(store, running.base_url, "vic", "viewer")) as viewer:
        failed_id = operator.get("/v1/console/failed").json()["rows"][0]["id"]
        edited = operator.post(f"/v1/console/failed/{failed_id}/edit",
                               json={"fields": {"case.description": "Pothole outside Ada's house, 12 Main St"}})
        assert edited.status_code == 200, edited.text
        [as_viewer] = viewer.get("/v1/console/cases", params={"q": "ADM-1"}).json()
        [as_operator] = operator.get("/v1/console/cases", params={"q": "ADM-1"}).json()
        assert "Ada's house" not in json.dumps(as_viewer) and "Ada&#39;s house" not in json.dumps(as_viewer)
        assert "Ada's house" in json.dumps(as_operator)
        assert "Ada's house" not in viewer.get(f"/v1/console/failed/{failed_id}").text
        case_page = viewer.get("/console/cases", params={"q": "ADM-1"}, follow_redirects=True).text
        assert "Ada&#39;s house" not in case_page and "edited" in case_page


def test_only_whole_cases_can_be_corrected(running: RunningBroker) -> None:
    early = status_changed("ADM-2", "in_progress")
    failed_id = record_intake_failure(running.broker.store, reason="rejected", error_text="no case 'ADM-2'",
                                      raw_body=json.dumps(early).encode(), event_id=early["event_id"])
    garbled = record_intake_failure(running.broker.store, reason="invalid_json", error_text="not JSON",
                                    raw_body=b"{nope", event_id=None)
    with closing(officer_client(running.broker.store, running.base_url, "omar", "operator")) as operator:
        detail = operator.get(f"/v1/console/failed/{failed_id}").json()
        assert detail["editable"] is False and detail["message"]["change"]["status"] == "in_progress"
        refused = operator.post(f"/v1/console/failed/{failed_id}/edit", json={"fields": {"case.service_code": "x"}})
        assert refused.status_code == 422 and "case.created" in refused.json()["message"]
        unreadable = operator.get(f"/v1/console/failed/{garbled}").json()
        assert unreadable["editable"] is False and unreadable["message"] == {"as received": "{nope"}
        page = operator.get(f"/console/failed/{garbled}").text
        assert "Correct and replay" not in page and "{nope" in page
        missing = operator.get("/console/failed/424242")
        assert missing.status_code == 404 and "Page not found" in missing.text
        assert operator.get("/v1/console/failed/424242").json()["error"] == "not_found"  # the API keeps JSON
