"""``broker adapter new <name>`` writes an installable adapter package whose own contract tests pass as written."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from support.processes import broker_env, run_broker


def test_the_scaffold_is_a_package_with_its_entry_points_and_passing_contract_tests(tmp_path: Path) -> None:
    made = run_broker("adapter", "new", "street_works", "--dir", str(tmp_path), "--title", "Street Works",
                      env=broker_env(), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "casebridge-street-works"
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()) == [
        "README.md", "casebridge_street_works/__init__.py", "casebridge_street_works/adapter.py",
        "casebridge_street_works/config.py", "casebridge_street_works/sandbox.py",
        "casebridge_street_works/simulator.py", "pyproject.toml", "tests/test_contract.py",
    ]
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["casebridge.adapters"] == {
        "street_works": "casebridge_street_works.adapter:StreetWorksAdapter"}
    assert project["project"]["entry-points"]["casebridge.sandboxes"] == {
        "street_works": "casebridge_street_works.sandbox:StreetWorksSandbox"}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=folder,
                           env={**os.environ, "PYTHONPATH": str(folder)}, capture_output=True, text=True, timeout=300,
                           check=False)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    lint = subprocess.run([str(Path(sys.executable).with_name("ruff")), "check", "--no-cache", "--line-length", "120",
                           "--select", "E,F,W,I,B,UP,SIM,RUF", "."], cwd=folder, capture_output=True, text=True,
                          check=False)
    assert lint.returncode == 0, lint.stdout


def test_a_name_that_cannot_be_an_entry_point_or_an_existing_folder_is_refused(tmp_path: Path) -> None:
    refused = run_broker("adapter", "new", "Waste-Tracker", "--dir", str(tmp_path), env=broker_env(), cwd=tmp_path)
    assert refused.returncode == 2 and "lower-case letters" in refused.stderr
    assert run_broker("adapter", "new", "waste", "--dir", str(tmp_path), env=broker_env(), cwd=tmp_path).returncode == 0
    again = run_broker("adapter", "new", "waste", "--dir", str(tmp_path), env=broker_env(), cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr
