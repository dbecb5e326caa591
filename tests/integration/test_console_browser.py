"""The support console in a real browser: Playwright driving Debian's Chromium against a running broker.

Signs in, filters the failed list, opens a message, corrects and replays it and sees it delivered, runs a bulk
replay and watches its progress update without a reload; checks that a script in a case description is shown as
text, that the keyboard reaches the skip link first, that axe-core finds no WCAG 2.2 A/AA violation on each page,
and that the browser logged no errors. Saves screenshots of the main pages to build/screenshots/;
scripts/copy-screenshots.sh copies them into docs/screenshots/ for the README (no test writes into docs/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.console import PASSWORD
from support.envelopes import case_created
from support.harness import REPO, RunningBroker
from support.receiver import Answer, WebhookReceiver

from broker.console.accounts import create_user
from broker.scheduling.context import JobContext
from broker.scheduling.jobs import JOBS
from broker.scheduling.scheduler import Scheduler
from broker.scheduling.schedules import load_schedules
from broker.settings import Settings

pytestmark = [pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
              pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)]

CHROMIUM = os.environ.get("CASEBRIDGE_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO / "build" / "screenshots"
XSS = "<script>window.__injected = true</script> Pothole by the bus stop"


@pytest.fixture
def running(settings: Settings) -> Iterator[RunningBroker]:
    """A broker with the shipped schedules, so the dashboard has some to show."""
    for schedule in (REPO / "schedules").glob("*.yaml"):
        (settings.schedules_dir / schedule.name).write_text(schedule.read_text())
    broker = RunningBroker(settings)
    yield broker
    broker.stop()


@pytest.fixture
def browser_page(running: RunningBroker) -> Iterator[tuple[object, list[str]]]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: scripts/test.sh installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, base_url=running.base_url)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(15_000)
        yield page, errors
        browser.close()


#: axe-core's checks for WCAG 2.0, 2.1 and 2.2 at levels A and AA.
WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]},
           "resultTypes": ["violations"]}


def accessible(page: object) -> None:
    """No WCAG A/AA violation that axe-core can detect on the page as it stands."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options=WCAG_AA)
    assert results.violations_count == 0, f"{page.url}:\n{results.generate_report()}"  # type: ignore[attr-defined]


def shot(page: object, name: str) -> None:
    """Save a screenshot for the docs, after checking the page's accessibility."""
    accessible(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def test_an_officer_finds_fixes_and_replays_failed_messages(running: RunningBroker, receiver: WebhookReceiver,
                                                            browser_page: tuple[object, list[str]]) -> None:
    from playwright.sync_api import Page, expect

    page: Page = browser_page[0]  # type: ignore[assignment]
    errors = browser_page[1]
    create_user(running.broker.store, "priya", "operator", PASSWORD)
    receiver.answer("/highways", Answer(422, {"error": "EnquiryX: easting is outside the district"}),
                    *[Answer(422, {"error": "street not adopted"})] * 3)
    running.post_case(case_created("HW-1001", description=XSS))
    for n in range(2, 5):
        running.post_case(case_created(f"HW-100{n}"))
    receiver.answer("/environment", Answer(400, {"error": "noise type missing"}))
    running.post_case(case_created("ENV-2001", service_code="environment.noise"))
    running.wait_until(lambda: running.delivery_states().get("failed") == 5, what="five failures")

    page.goto("/console")
    expect(page).to_have_url(f"{running.base_url}/console/sign-in")
    accessible(page)
    page.keyboard.press("Tab")
    expect(page.locator(".govuk-skip-link")).to_be_focused()
    page.get_by_label("Name").fill("priya")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("row", name="highways").get_by_role("link")).to_have_text("4 failed for highways")

    page.get_by_role("link", name="Failed messages").click()
    expect(page.locator("#result-count")).to_contain_text("5 open failed messages")
    page.get_by_label("Target").select_option("highways")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#result-count")).to_contain_text("4 open failed messages")
    expect(page.get_by_role("link", name="ENV-2001")).to_have_count(0)
    shot(page, "failed-list")

    page.get_by_role("link", name="HW-1001").click()
    expect(page.get_by_role("heading", name="Case HW-1001")).to_be_visible()
    expect(page.locator("pre.cb-code").first).to_contain_text("<script>window.__injected = true</script>")
    assert page.evaluate("window.__injected === undefined")
    assert page.locator("main script").count() == 0
    expect(page.locator("pre.cb-code").nth(1)).to_contain_text("easting is outside the district")
    shot(page, "message-detail")

    page.get_by_label("Easting").fill("531200")
    page.get_by_role("button", name="Save the correction and replay").click()
    expect(page.locator("#outcome")).to_contain_text("edited (easting) and replayed")
    expect(page.locator("#state")).to_contain_text("replayed by user:priya")
    running.wait_until(lambda: receiver.on("/highways")[-1].body["event"]["case"]["location"]["easting"] == 531200.0,
                       what="the corrected case to arrive")
    page.get_by_role("link", name="Whole timeline of case HW-1001").click()
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("edited")
    for _ in range(20):
        if "delivered" in timeline.inner_text():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(timeline.get_by_role("row").filter(has_text="delivered")).to_contain_text("target:highways")
    expect(timeline.get_by_role("row").filter(has_text="replayed")).to_contain_text("user:priya")
    accessible(page)

    page.get_by_role("link", name="Failures by cause").click()
    expect(page.get_by_role("heading", name="Failures by cause")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(2)  # three highways refusals are one line; environment another
    shot(page, "groups")

    page.get_by_role("link", name="Failed messages").click()
    page.get_by_label("Target").select_option("highways")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("button", name="Replay all 3 matching").click()
    expect(page.locator("#dry-run")).to_contain_text("3 open failed messages will be sent again")
    expect(page.locator("#dry-run")).to_contain_text("3 to highways")
    accessible(page)
    page.get_by_label("How many at a time").fill("1")
    page.get_by_label("Seconds to wait between batches").fill("2.5")
    page.get_by_role("button", name="Replay 3 messages").click()
    expect(page.locator("[data-field=state]")).to_have_text("running")
    expect(page.locator("[data-field=done]")).not_to_have_text("0")  # the page follows the job by itself
    shot(page, "replay-in-progress")
    url = page.url
    expect(page.locator("[data-field=delivered]")).to_have_text("3", timeout=30_000)  # updated without a reload
    expect(page.locator("[data-field=state]")).to_have_text("finished")
    assert page.url == url

    broker = running.broker
    schedules = load_schedules(running.settings.schedules_dir, known_jobs=set(JOBS))
    scheduler = Scheduler(JobContext(broker.store, broker.configuration, broker.intake), schedules,
                          stop=broker.stop_event)
    scheduler.run_now(next(s for s in schedules if s.job == "deliveries.requeue_stale"))
    page.get_by_role("link", name="Dashboard").click()
    highways = page.get_by_role("row", name="highways")
    expect(highways.get_by_role("link", name="4 delivered for highways")).to_be_visible()
    expect(page.get_by_role("row", name="requeue-stale-deliveries")).to_contain_text("succeeded")
    expect(page.get_by_role("link", name="Every open failure with target highways")).to_be_visible()
    shot(page, "dashboard")
    highways.get_by_role("link", name="4 delivered for highways").click()
    expect(page.locator("#delivery-count")).to_contain_text("4 case messages")
    accessible(page)
    assert errors == [], errors
