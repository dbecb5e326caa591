"""The first run has no traps: commands on a store never migrated work or say what to do, ``broker init`` writes a
configuration that ``broker check`` passes, and a command run where there is none says so."""

from __future__ import annotations

from pathlib import Path

from support.harness import REPO
from support.processes import broker_env, run_broker
from support.services import postgres_database


def test_every_command_that_reads_the_store_works_on_a_fresh_embedded_store(tmp_path: Path) -> None:
    env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"))
    for command in (["batch", "list"], ["failed", "list"], ["keys", "list"], ["users", "list"], ["status"]):
        result = run_broker(*command, env=env, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr and "sqlalchemy" not in result.stderr.lower(), command
    assert (tmp_path / "casebridge.db").exists()  # the embedded default migrated itself


def test_a_postgresql_store_never_migrated_says_to_run_db_upgrade(tmp_path: Path) -> None:
    with postgres_database() as url:
        env = broker_env(database_url=url, mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"))
        for command in (["batch", "list"], ["failed", "list"], ["status"], ["case", "show", "X-1"]):
            result = run_broker(*command, env=env, cwd=tmp_path)
            output = " ".join((result.stdout + result.stderr).split())
            assert result.returncode == 2, (command, output)
            assert "run `broker db upgrade`" in output and "Traceback" not in output, command


def test_broker_init_writes_a_configuration_broker_check_passes(tmp_path: Path) -> None:
    env = broker_env()
    bare = run_broker("run", env=env, cwd=tmp_path)
    assert bare.returncode == 2 and "broker init" in bare.stderr and "Traceback" not in bare.stderr
    written = run_broker("init", env=env, cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert sorted(path.name for path in (tmp_path / "mappings").iterdir()) == ["routes.yaml", "services.yaml"]
    assert {path.name for path in (tmp_path / "schedules").iterdir()} >= {"retention.yaml"}
    assert (tmp_path / "mappings" / "routes.yaml").read_text().startswith("#")  # commented for a newcomer
    checked = run_broker("check", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = run_broker("init", env=env, cwd=tmp_path)
    assert again.returncode == 0 and "kept" in again.stderr  # what the user may have edited is never overwritten
