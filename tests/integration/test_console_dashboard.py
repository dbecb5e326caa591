"""The console's dashboard: per target counts, circuits and last success; per schedule its last and next run."""

from __future__ import annotations

import threading
from contextlib import closing

import httpx
import pytest
from support.console import officer_client
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import Answer, WebhookReceiver

from broker.config.models import CircuitPolicy
from broker.console.queries import dashboard
from broker.delivery.circuit import CircuitBreaker
from broker.scheduling.context import JobContext
from broker.scheduling.scheduler import Scheduler
from broker.scheduling.schedules import Schedule

pytestmark = pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)


def test_the_dashboard_counts_per_target_and_shows_schedule_runs(running: RunningBroker,
                                                                 receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(422, {"error": "refused"}))
    for n in range(3):
        running.post_case(case_created(f"DASH-{n}"))
    running.wait_settled()
    CircuitBreaker("environment", CircuitPolicy(failures=1, open_seconds=60), running.broker.store).failed("down")

    broker = running.broker
    schedules = [Schedule(name="requeue", cron="*/10 * * * *", job="deliveries.requeue_stale"),
                 Schedule(name="broken", cron="0 3 * * *", job="deliveries.requeue_stale",
                          options={"older_than_minutes": "not a number"})]
    scheduler = Scheduler(JobContext(broker.store, broker.configuration, broker.intake), schedules,
                          stop=threading.Event())
    for schedule in schedules:
        scheduler.run_now(schedule)

    targets, runs = dashboard(broker.store, sorted(broker.configuration.targets), schedules)
    highways = {t.target: t for t in targets}["highways"]
    assert (highways.delivered_today, highways.failed, highways.pending, highways.circuit) == (2, 1, 0, "closed")
    assert highways.last_success is not None
    assert {t.target: t.circuit for t in targets}["environment"] == "open"
    by_name = {run.name: run for run in runs}
    assert by_name["requeue"].outcome == "succeeded" and by_name["requeue"].last_run is not None
    assert by_name["broken"].outcome == "failed" and "ValueError" in (by_name["broken"].summary or "")
    assert by_name["requeue"].next_run is not None

    with closing(officer_client(broker.store, running.base_url, "vera", "viewer")) as viewer:
        page = viewer.get("/console")
        assert page.status_code == 200
        assert 'href="/console/failed?target=highways"' in page.text and "Paused: failing" in page.text
        assert "Replay" not in viewer.get("/console/failed").text  # a viewer is offered no replay buttons
        assert 'href="/console/deliveries?target=highways&amp;view=delivered"' in page.text
        delivered = viewer.get("/console/deliveries", params={"target": "highways", "view": "delivered"})
        assert "2 case messages" in delivered.text
        references = [r.reference for r in receiver.on("/highways") if r.reference]
        assert len(references) == 2 and all(reference in delivered.text for reference in references)
        assert "0 case messages" in viewer.get("/console/deliveries", params={"target": "highways"}).text
        assert viewer.get("/console/deliveries", params={"target": "nowhere"}).status_code == 404
        # The reference the target system gave a case finds it.
        [found] = viewer.get("/v1/console/cases", params={"q": references[0]}).json()
        assert found["case_id"] in {"DASH-1", "DASH-2"}


def test_every_console_page_answers_a_signed_in_viewer(running: RunningBroker, receiver: WebhookReceiver) -> None:
    receiver.answer("/highways", Answer(422, {"error": "refused"}))
    running.post_case(case_created("PAGES-1"))
    running.wait_settled()
    with closing(officer_client(running.broker.store, running.base_url, "wendy", "viewer")) as viewer:
        failed_id = viewer.get("/v1/console/failed").json()["rows"][0]["id"]
        for path in ("/console", "/console/failed?target=highways&since=2026-01-01&until=2099-01-01",
                     "/console/groups", f"/console/failed/{failed_id}", "/console/cases?q=nothing"):
            response = viewer.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["x-frame-options"] == "DENY"
        found = viewer.get("/console/cases", params={"q": "PAGES-1"})
        assert found.status_code == 303
        assert "PAGES-1" in viewer.get(found.headers["location"]).text
        assert viewer.get("/console/failed/999999").status_code == 404
        assert viewer.get("/console/replay/999").status_code == 404
    assert httpx.get(f"{running.base_url}/console/static/govuk/govuk-frontend.min.css").status_code == 200
