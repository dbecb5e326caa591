"""`broker check` warns about what works but is not as safe as it could be: a webhook target that receives real-time
deliveries without a look-up is exactly-once only if its receiver honours ``Idempotency-Key``."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.harness import REPO
from support.processes import broker_env, run_broker

from broker.config.check import check_all
from broker.errors import Severity

ROUTES = """\
targets:
  portal:
    adapter: webhook
    system: portal
    settings:
      url: http://127.0.0.1:9/portal
  reporting:
    adapter: webhook
    settings:
      url: http://127.0.0.1:9/reporting
      lookup_url: http://127.0.0.1:9/reporting/received
  archive:
    adapter: webhook
    system: archive
    settings:
      url: http://127.0.0.1:9/archive
routes:
  - name: everything to the portal and reporting
    services: ["highways.*"]
    deliver:
      - target: portal
      - target: reporting
  - name: a nightly file for the archive
    services: ["highways.*"]
    deliver:
      - target: archive
        mode: batch
"""


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if line == text)


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": warning: " in line]


def test_the_shipped_webhook_targets_without_a_look_up_are_warned_about_and_check_still_passes() -> None:
    result = run_broker("check", env=broker_env(), cwd=REPO)

    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout + result.stderr
    routes = REPO / "mappings" / "routes.yaml"
    warned = warnings_in(result.stderr)
    assert len(warned) == 2, result.stderr
    for target in ("crm", "environment-team"):
        [line] = [line for line in warned if f"target {target!r}" in line]
        assert line.startswith(f"mappings/routes.yaml:{line_of(routes, f'  {target}:')}: warning: ")
        assert "lookup_url" in line and "Idempotency-Key" in line
        assert "GET <lookup_url>?idempotency_key=<event id>" in line and "docs/adapters/webhook.md" in line
    assert not any("'waste-contractor'" in line for line in warned)  # batch only: no POST to repeat
    assert "2 warning(s)" in result.stderr
    assert "problem(s) found" not in result.stderr


def test_a_warning_names_its_file_and_line_and_never_changes_the_exit_code(tmp_path: Path) -> None:
    mappings, schedules = tmp_path / "mappings", tmp_path / "schedules"
    mappings.mkdir()
    schedules.mkdir()
    shutil.copy(REPO / "mappings" / "services.yaml", mappings)
    routes = mappings / "routes.yaml"
    routes.write_text(ROUTES)

    problems = check_all(mappings, schedules)

    assert [(Path(p.file).name, p.line, p.severity) for p in problems] == [
        ("routes.yaml", line_of(routes, "  portal:"), Severity.warning)]
    assert "target 'portal'" in problems[0].message
    passed = run_broker("check", "--mappings", str(mappings), "--schedules", str(schedules), env=broker_env(),
                        cwd=tmp_path)
    assert passed.returncode == 0, passed.stderr
    [warned] = warnings_in(passed.stderr)
    assert warned.startswith(f"{routes}:{line_of(routes, '  portal:')}: warning: target 'portal'")
    assert "1 warning(s)" in passed.stderr

    # With an error too, the error is reported as ever, counted alone, and fails the check.
    routes.write_text(ROUTES.replace('services: ["highways.*"]\n    deliver:\n      - target: archive',
                                     'services: ["highway.*"]\n    deliver:\n      - target: archive'))
    failed = run_broker("check", "--mappings", str(mappings), "--schedules", str(schedules), env=broker_env(),
                        cwd=tmp_path)
    assert failed.returncode == 1
    error_line = line_of(routes, '  - name: a nightly file for the archive') + 1
    assert f"{routes}:{error_line}: route 'a nightly file for the archive': service pattern 'highway.*'" \
        in failed.stderr
    assert "1 problem(s) found." in failed.stderr and "1 warning(s)" in failed.stderr
    assert len(warnings_in(failed.stderr)) == 1
