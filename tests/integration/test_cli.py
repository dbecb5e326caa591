"""The ``broker`` command as an operator uses it: check, keys, case inspection, help."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from support.envelopes import case_created, status_changed
from support.harness import REPO, RunningBroker
from support.processes import broker_env, run_broker

from broker.settings import Settings

BROKEN_ROUTES = """\
targets:
  highways:
    adapter: webhok
    settings:
      url: http://127.0.0.1:9/highways
  environment:
    adapter: webhook
    settings:
      url: http://127.0.0.1:9/environment
routes:
  - name: highways
    services: ["highways.*"]
    deliver:
      - target: highway
  - name: environment
    services: ["environment.*"]
    events: [case.exploded]
    deliver:
      - target: environment
        mode: sometimes
"""

BROKEN_SCHEDULE = """\
name: nightly
cron: "61 * * * *"
job: deliveries.requeue_stael
timezone: Europe
"""


def test_check_passes_on_the_shipped_configuration(tmp_path: Path) -> None:
    result = run_broker("check", env=broker_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout + result.stderr


def test_check_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    mappings, schedules = tmp_path / "mappings", tmp_path / "schedules"
    mappings.mkdir()
    schedules.mkdir()
    shutil.copy(REPO / "mappings" / "services.yaml", mappings)
    (mappings / "routes.yaml").write_text(BROKEN_ROUTES)
    (schedules / "nightly.yaml").write_text(BROKEN_SCHEDULE)

    result = run_broker("check", "--mappings", str(mappings), "--schedules", str(schedules), env=broker_env(),
                        cwd=tmp_path)

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    expected = {
        "mappings/routes.yaml:3:": "Did you mean 'webhook'?",
        "mappings/routes.yaml:14:": "unknown target 'highway'",
        "mappings/routes.yaml:17:": "routes.1.events.0",
        "mappings/routes.yaml:20:": "routes.1.deliver.0.mode",
        "schedules/nightly.yaml:2:": "not a valid five-field cron expression",
        "schedules/nightly.yaml:3:": "unknown job 'deliveries.requeue_stael'",
        "schedules/nightly.yaml:4:": "unknown time zone 'Europe'",
    }
    for where, message in expected.items():
        assert any(where in line and message in line for line in lines), f"{where} {message!r} not in:\n{result.stderr}"
    assert "7 problem(s) found." in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_bad_settings_from_the_environment(tmp_path: Path) -> None:
    result = run_broker("check", env=broker_env(http_port="eighty"), cwd=REPO)
    assert result.returncode == 1
    assert "CASEBRIDGE_HTTP_PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["run"], ["api"], ["worker"], ["scheduler"], ["check"], ["case", "history"],
                                     ["keys", "create"], ["db", "upgrade"], ["schema", "export"]])
def test_every_command_explains_itself(command: list[str], tmp_path: Path) -> None:
    result = run_broker(*command, "--help", env=broker_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: broker" in result.stdout
    assert len(result.stdout.splitlines()) > 4


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_a_created_key_authenticates_its_system_only(settings: Settings, tmp_path: Path) -> None:
    env = broker_env(database_url=settings.database_url, mappings_dir=str(settings.mappings_dir),
                     schedules_dir=str(settings.schedules_dir), amqp_url="memory://")
    created = run_broker("keys", "create", "portal", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("cbk_")
    listed = run_broker("keys", "list", env=env, cwd=tmp_path)
    assert "portal" in listed.stdout and key not in listed.stdout  # only a prefix is ever shown again

    running = RunningBroker(settings)
    try:
        as_portal = httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {key}"})
        assert as_portal.post("/v1/cases", json=case_created(source="portal")).status_code == 202
        refused = as_portal.post("/v1/cases", json=case_created(source="crm"))
        assert refused.status_code == 403
        wrong = httpx.post(f"{running.base_url}/v1/cases", json=case_created(source="portal"),
                           headers={"Authorization": "Bearer cbk_not-a-real-key"})
        assert wrong.status_code == 401
    finally:
        running.stop()


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_case_history_and_show_print_what_happened(running: RunningBroker, tmp_path: Path) -> None:
    created = case_created("CLI-0001")
    assert running.client.post("/v1/cases", json=created).status_code == 202
    running.wait_settled()
    assert running.client.post("/v1/cases/CLI-0001/events", json=status_changed("CLI-0001", "in_progress")
                               ).status_code == 202
    running.wait_settled()
    settings = running.settings
    env = broker_env(database_url=settings.database_url, mappings_dir=str(settings.mappings_dir))

    history = run_broker("case", "history", "CLI-0001", "--json", env=env, cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    entries = json.loads(history.stdout)["entries"]
    steps = [entry["step"] for entry in entries if entry["event_id"] == created["event_id"]]
    assert steps == ["received", "validated", "routed", "delivered"]
    assert all(entry["at"] for entry in entries)
    assert {entry["actor"] for entry in entries if entry["step"] == "received"} == {"system:crm"}

    table = run_broker("case", "history", "CLI-0001", env=env, cwd=tmp_path)
    assert table.returncode == 0
    assert "delivered" in table.stdout and "highways" in table.stdout

    shown = run_broker("case", "show", "CLI-0001", "--json", env=env, cwd=tmp_path)
    view = json.loads(shown.stdout)
    assert view["status"] == "in_progress"
    # The status change came from the CRM itself, so it is not routed back to the CRM target.
    assert [(d["event_type"], d["target"], d["state"]) for d in view["deliveries"]] == [
        ("case.created", "highways", "delivered"), ("case.status_changed", "highways", "delivered")]
    assert any(d["external_ref"] for d in view["deliveries"] if d["target"] == "highways")

    missing = run_broker("case", "history", "NOPE-1", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "No case 'NOPE-1'" in missing.stdout + missing.stderr
