"""The ``broker`` command with odd input and missing services, run as an operator runs it (a real process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support.envelopes import case_created
from support.harness import REPO, RunningBroker
from support.processes import broker_env, run_broker
from support.receiver import Answer, WebhookReceiver

UNREACHABLE = "postgresql+psycopg://casebridge@127.0.0.1:1/casebridge"


def test_text_that_looks_like_markup_is_printed_as_it_is(broker_with: Callable[..., RunningBroker],
                                                          receiver: WebhookReceiver, tmp_path: Path) -> None:
    running = broker_with()
    receiver.answer("/highways", Answer(422, {"error": "[/bold] refused"}))
    assert running.post_case(case_created("MK[red]1")).status_code == 202
    running.wait_settled()
    env = broker_env(database_url=running.settings.database_url, mappings_dir=str(running.settings.mappings_dir))
    missing = run_broker("case", "show", "MK[/bold]", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr + missing.stdout
    assert "No case 'MK[/bold]'" in missing.stdout
    for command in (["case", "show", "MK[red]1"], ["case", "history", "MK[red]1"],
                    ["failed", "list"], ["failed", "show", "1"]):
        shown = run_broker(*command, env=env, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "MK[red]1" in shown.stdout.replace("\n", "").replace(" ", "") or command[0] == "failed"
        assert "Traceback" not in shown.stderr


def test_an_unreachable_store_is_one_clear_line_and_a_failing_exit(tmp_path: Path) -> None:
    env = broker_env(database_url=UNREACHABLE, mappings_dir=str(REPO / "mappings"),
                     schedules_dir=str(REPO / "schedules"), http_port="8999")
    for command in (["status"], ["run"], ["api"], ["case", "show", "X"], ["failed", "list"]):
        result = run_broker(*command, env=env, cwd=tmp_path, timeout=60)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        assert "Traceback" not in result.stderr
        [line] = [line for line in lines if "cannot reach" in line]
        assert line.startswith("broker: cannot reach the store (CASEBRIDGE_DATABASE_URL): OperationalError")
        assert len(lines) <= 3, (command, lines)  # the line, and at most what `run` says before connecting
