"""The HTTP API under an attacker's and a careless sender's requests, through the real uvicorn server.

Raw bytes where the framing is the point; the process's peak memory where the question is whether a body was read.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select
from support.envelopes import case_created, note_added
from support.harness import RunningBroker
from support.raw_http import chunked, peak_memory, raw_request, reset_peak_memory
from support.receiver import WebhookReceiver
from support.services import postgres_database

from broker.store.tables import CaseRecord

MIB = 1024 * 1024


def test_a_request_with_both_content_length_and_chunks_is_refused_before_any_of_it_is_read(
        broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with()
    before = reset_peak_memory()
    answer = raw_request(running.port, "POST /v1/cases HTTP/1.1\r\nHost: casebridge\r\nContent-Type: application/json"
                                       "\r\nContent-Length: 10\r\nTransfer-Encoding: chunked", chunked(200, MIB))
    grown = peak_memory() - before
    assert answer.status == 400, answer
    # llhttp, the server's parser, refuses the framing itself: before the app is called, before any body is read.
    assert answer.body == b"Invalid HTTP request received."
    assert answer.headers["connection"] == "close"
    assert answer.sent < MIB, f"the server went on reading: {answer.sent} bytes taken"
    assert grown < 40 * MIB, f"peak memory grew by {grown // MIB} MiB"


def test_a_chunked_body_is_counted_as_it_arrives_and_cut_off_at_the_limit(
        broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with()
    before = reset_peak_memory()
    answer = raw_request(running.port, f"POST /v1/cases HTTP/1.1\r\nHost: casebridge\r\nAuthorization: Bearer "
                                       f"{running.api_key}\r\nContent-Type: application/json\r\n"
                                       "Transfer-Encoding: chunked", chunked(200, MIB))
    grown = peak_memory() - before
    assert answer.status == 413, answer
    assert json.loads(answer.body)["error"] == "payload_too_large"
    assert answer.sent < 50 * MIB
    assert grown < 40 * MIB, f"peak memory grew by {grown // MIB} MiB"


def test_no_body_is_read_before_the_api_key_is_checked(broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with()
    # Only the head is sent: the answer must come without the server waiting for the 500 kB it announced.
    for authorization in ("", "Authorization: Bearer cbk_not-a-key\r\n"):
        answer = raw_request(running.port, f"POST /v1/cases HTTP/1.1\r\nHost: casebridge\r\n{authorization}"
                                           "Content-Type: application/json\r\nContent-Length: 500000", timeout=5)
        assert answer.status == 401, answer
        assert answer.headers["www-authenticate"] == "Bearer"
    declared_too_big = raw_request(running.port, f"POST /v1/cases HTTP/1.1\r\nHost: casebridge\r\nAuthorization: "
                                                 f"Bearer {running.api_key}\r\nContent-Length: {2 * MIB}", timeout=5)
    assert declared_too_big.status == 413


def test_nul_characters_are_refused_with_the_field_named_on_postgresql(
        broker_with: Callable[..., RunningBroker], capfd: pytest.CaptureFixture[str]) -> None:
    with postgres_database() as url:
        running = broker_with(database_url=url)
        body = case_created("NUL-1")
        body["case"]["reporter"]["person"]["name"] = "Ada\u0000Lovelace"
        body["case"]["location"]["address"] = "12 Acacia Avenue\u0000"
        body["case"]["attributes"] = {"note": "left\u0000 of the gate"}
        response = running.post_case(body)
        assert response.status_code == 422, response.text
        fields = {error["field"] for error in response.json()["errors"]}
        assert fields == {"case.reporter.person.person.name", "case.location.address", "case.attributes.note"}
        assert "Lovelace" not in response.text and "Acacia" not in response.text
        note = note_added("NUL-1", "called\u0000 again")
        assert running.post_case(case_created("NUL-1")).status_code == 202
        refused = running.post_event("NUL-1", note)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "note.text"
        running.stop()
    printed = capfd.readouterr()
    assert "Lovelace" not in printed.err + printed.out and "Traceback" not in printed.err


def test_a_case_id_that_cannot_be_part_of_its_url_is_refused_before_anything_is_stored(
        broker_with: Callable[..., RunningBroker]) -> None:
    running = broker_with()
    for case_id in ("CRM/2026/1", "CRM?1", "CRM#1", "CRM%2F1", "CRM\\1", "CRM\t1"):
        body = case_created(case_id)
        first = running.post_case(body)
        assert first.status_code == 422, first.text
        assert first.json()["errors"][0]["field"] == "case.case_id"
        assert running.post_case(body).status_code == 422  # the retry is refused the same way, not a 500
    with running.broker.store.read() as session:
        assert session.scalars(select(CaseRecord.case_id)).all() == []


def test_a_receipt_is_built_on_the_configured_base_url_never_the_host_header(
        broker_with: Callable[..., RunningBroker], receiver: WebhookReceiver) -> None:
    running = broker_with(public_base_url="https://casebridge.northshire.example/")
    body = case_created("CRM 00:1~x")
    response = running.post_case(body, headers={"Host": "evil.example"})
    assert response.status_code == 202, response.text
    assert response.json()["status_url"] == "https://casebridge.northshire.example/v1/cases/CRM%2000%3A1~x"
    again = running.post_case(body, headers={"Host": "evil.example"})
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert running.client.get("/v1/cases/CRM 00:1~x").status_code == 200
    derived = broker_with(http_host="0.0.0.0", http_port=8123)
    receipt = derived.post_case(case_created("CRM-2"), headers={"Host": "evil.example"}).json()
    assert receipt["status_url"] == "http://127.0.0.1:8123/v1/cases/CRM-2"


def test_each_api_key_has_its_own_rate(broker_with: Callable[..., RunningBroker]) -> None:
    from broker.store.keys import create_key

    running = broker_with(api_rate_per_second=0.5, api_rate_burst=3)
    answers = [running.client.get("/v1/cases/RATE-1").status_code for _ in range(4)]
    assert answers == [404, 404, 404, 429]
    limited = running.client.get("/v1/cases/RATE-1")
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 2
    assert limited.json()["error"] == "too_many_requests"
    other = httpx.get(f"{running.base_url}/v1/cases/RATE-1",
                      headers={"Authorization": f"Bearer {create_key(running.broker.store, 'crm')}"})
    assert other.status_code == 404  # another key is not held back by the first one's rate


def test_the_api_docs_load_with_nothing_but_the_broker(broker_with: Callable[..., RunningBroker]) -> None:
    import re
    import tomllib
    from fnmatch import fnmatch

    from broker.api.app import SWAGGER_UI_DIR

    running = broker_with()
    page = httpx.get(f"{running.base_url}/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert httpx.get(f"{running.base_url}/redoc").status_code == 404  # ReDoc would load from a CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3 and all(asset.startswith("/docs/static/") for asset in assets), assets
    assert not re.search(r"(?:https?:)?//", page.text), "the page names another host"
    for asset in assets:
        served = httpx.get(f"{running.base_url}{asset}")
        assert served.status_code == 200 and len(served.content) > 500, asset
    patterns = tomllib.loads((SWAGGER_UI_DIR.parents[3] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["broker"]
    for path in SWAGGER_UI_DIR.iterdir():  # shipped in the wheel, not only present in a clone
        assert any(fnmatch(str(path.relative_to(SWAGGER_UI_DIR.parents[2])), pattern) for pattern in patterns), path


def test_the_api_docs_render_in_a_browser_that_can_reach_only_the_broker(
        broker_with: Callable[..., RunningBroker]) -> None:
    import os
    from pathlib import Path

    from playwright.sync_api import Route, sync_playwright

    chromium = os.environ.get("CASEBRIDGE_TEST_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.fail(f"Chromium is not installed at {chromium}: scripts/test.sh installs Debian's chromium package")
    running = broker_with()
    elsewhere: list[str] = []

    def offline(route: Route) -> None:  # a council's network without the internet
        if route.request.url.startswith(running.base_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page()
        page.route("**/*", offline)
        page.goto(f"{running.base_url}/docs")
        page.wait_for_selector("[data-path=\"/v1/cases/{case_id}/history\"]", timeout=15_000)
        browser.close()
    assert elsewhere == []
