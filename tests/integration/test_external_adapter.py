"""An adapter package from outside the repository — what ``broker adapter new`` writes — installed with pip, is
found by its entry point, checked by ``broker check`` and delivers a case end to end; then uninstalled again."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.envelopes import case_created
from support.harness import REPO, RunningBroker
from support.processes import broker_env, run_broker

from broker.plugins import registry

DISTRIBUTION = "casebridge-kerbside"
ROUTES = """\
targets:
  kerbside:
    adapter: kerbside
    settings:
      url: {url}
      api_key_env: CASEBRIDGE_KERBSIDE_API_KEY
      timeout_seconds: 5
routes:
  - name: potholes to Kerbside
    services: ["highways.pothole"]
    deliver:
      - target: kerbside
"""


def _forget_plugins() -> None:
    importlib.invalidate_caches()
    registry.available_adapters.cache_clear()
    registry.adapter_class.cache_clear()
    for name in [module for module in sys.modules if module.startswith("casebridge_kerbside")]:
        del sys.modules[name]


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    made = run_broker("adapter", "new", "kerbside", "--dir", str(tmp_path), env=broker_env(), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "casebridge-kerbside"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(folder)], check=True,
                   capture_output=True, timeout=300, cwd=tmp_path)
    _forget_plugins()
    try:
        yield folder
    finally:
        subprocess.run([*pip, "uninstall", "-y", DISTRIBUTION], check=True, capture_output=True, timeout=120)
        _forget_plugins()


@pytest.mark.slow
def test_an_installed_package_is_found_checked_and_delivers(installed: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            broker_with: Callable[..., RunningBroker]) -> None:
    assert str(REPO) not in str(installed)
    found = subprocess.run([sys.executable, "-c", "from importlib.metadata import entry_points; "
                            "print(sorted(e.value for e in entry_points(group='casebridge.adapters')))"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "casebridge_kerbside.adapter:KerbsideAdapter" in found.stdout

    from casebridge_kerbside.sandbox import KerbsideSandbox

    sandbox = KerbsideSandbox()
    sandbox.start("127.0.0.1", 0)
    try:
        mappings = tmp_path / "kerbside-mappings"
        mappings.mkdir()
        (mappings / "services.yaml").write_text((REPO / "mappings" / "services.yaml").read_text())
        (mappings / "routes.yaml").write_text(ROUTES.format(url=sandbox.url))
        (mappings / "kerbside.yaml").write_text("services:\n  highways.pothole: POTHOLE\n")
        checked = run_broker("check", "--mappings", str(mappings), "--schedules", str(tmp_path),
                             env=broker_env(), cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        (mappings / "kerbside.yaml").write_text("services:\n  highways.pothole: POTHOLE\nno_such_key: 1\n")
        refused = run_broker("check", "--mappings", str(mappings), "--schedules", str(tmp_path),
                             env=broker_env(), cwd=tmp_path)
        assert refused.returncode == 1 and "kerbside.yaml:3: no_such_key" in refused.stderr, refused.stderr
        (mappings / "kerbside.yaml").write_text("services:\n  highways.pothole: POTHOLE\n")

        for name, value in sandbox.environment().items():
            monkeypatch.setenv(name, value)
        running = broker_with(mappings_dir=mappings)
        body: dict[str, Any] = case_created("KERB-1")
        assert running.post_case(body).status_code == 202
        assert running.wait_settled() == {"delivered": 1}
        assert sandbox.simulator is not None
        (record,) = sandbox.simulator.records.values()
        assert (record["type"], record["description"]) == ("POTHOLE", body["case"]["description"])
        assert sandbox.records_for(record["reference"]) == [record["id"]]
    finally:
        sandbox.close()
