"""`broker check` holds every real-time route to what its targets' adapters declare they can carry: a Uniform target
takes new cases only, so a route that would send it updates is reported, with file and line, before anything runs."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.harness import REPO

from broker.config.check import check_all
from broker.errors import Severity

ROUTES = """\
targets:
  uniform:
    adapter: uniform
    settings:
      url: http://127.0.0.1:9/uniform
      username: casebridge
      password_env: CASEBRIDGE_UNIFORM_PASSWORD
      database_id: DEMO
  crm:
    adapter: webhook
    settings:
      url: http://127.0.0.1:9/crm
      lookup_url: http://127.0.0.1:9/crm/received
routes:
  - name: noise to Uniform
    services: ["environment.noise"]
    deliver:
      - target: uniform
  - name: pests to Uniform
    services: ["environment.pests"]
    events: [case.created, case.note_added]
    deliver:
      - target: crm
      - target: uniform
  - name: dog fouling to Uniform
    services: ["environment.dog_fouling"]
    events: [case.created]
    deliver:
      - target: uniform
  - name: noise overnight
    services: ["environment.noise"]
    deliver:
      - target: uniform
        mode: batch
"""


def mappings(tmp_path: Path, routes: str = ROUTES) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(REPO / "mappings" / "services.yaml", folder / "services.yaml")
    shutil.copy(REPO / "mappings" / "uniform.yaml", folder / "uniform.yaml")
    (folder / "routes.yaml").write_text(routes)
    return folder


def line_of(path: Path, text: str, after: int = 0) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1)
                if number > after and line == text)


def test_a_route_sending_events_the_adapter_cannot_carry_is_an_error_with_its_line(tmp_path: Path) -> None:
    folder = mappings(tmp_path)
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    problems = [problem for problem in check_all(folder, schedules) if problem.severity is Severity.error]
    routes = str(folder / "routes.yaml")
    noise = line_of(folder / "routes.yaml", "  - name: noise to Uniform")
    pests = line_of(folder / "routes.yaml", "    events: [case.created, case.note_added]")
    assert [(problem.file, problem.line) for problem in problems] == [
        (routes, line_of(folder / "routes.yaml", "      - target: uniform", noise)),
        (routes, pests),
    ]
    first, second = (problem.message for problem in problems)
    assert "route 'noise to Uniform' sends case.updated, case.note_added, case.status_changed, case.closed" in first
    assert "target 'uniform'" in first and "adapter 'uniform' cannot carry them" in first
    assert "capabilities: create, lookup, poll_updates" in first
    assert "events: [case.created]" in first  # what to write instead
    assert "route 'pests to Uniform' sends case.note_added to target 'uniform'" in second


def test_routes_within_the_adapters_capabilities_pass(tmp_path: Path) -> None:
    routes = ROUTES.replace('''  - name: noise to Uniform
    services: ["environment.noise"]
    deliver:''', '''  - name: noise to Uniform
    services: ["environment.noise"]
    events: [case.created]
    deliver:''').replace("events: [case.created, case.note_added]", "events: [case.created]")
    folder = mappings(tmp_path, routes)
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    assert [problem for problem in check_all(folder, schedules) if problem.severity is Severity.error] == []
