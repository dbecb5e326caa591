"""`broker uniform codes` shows and saves Uniform's code lists; `broker check` then names every mapping code Uniform
lacks; `broker run --demo` carries a noise complaint to the Uniform simulator and its closure back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.envelopes import case_created
from support.harness import REPO
from support.processes import broker_env, run_broker
from support.soap_targets import UNIFORM, running_demo

from adapters.uniform.simulator import UniformSimulator


@pytest.fixture
def simulator() -> Iterator[UniformSimulator]:
    yield from UNIFORM.simulated()


def test_codes_are_shown_saved_and_checked(simulator: UniformSimulator, tmp_path: Path) -> None:
    mappings, env = UNIFORM.command_env(tmp_path, simulator.url)

    shown = run_broker("uniform", "codes", "srcloseact", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "DUPR" in shown.stdout and "Duplicate request" in shown.stdout

    del simulator.code_lists["SRRECTYPE"]["PEST"]  # this council's Uniform takes no pest complaints
    saved = run_broker("uniform", "codes", "--save", env=env, cwd=tmp_path)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    lookups = yaml.safe_load((mappings / "uniform.lookups.yaml").read_text())
    assert set(lookups) == {"SRRECTYPE", "SRRECHOW", "SRCUSTTYPE", "SRCLOSEACT"}
    assert "NOISE" in lookups["SRRECTYPE"] and "PEST" not in lookups["SRRECTYPE"]
    assert simulator.logoffs == 2  # each command ended its session

    checked = run_broker("check", env=env, cwd=tmp_path)
    assert checked.returncode == 1
    assert "services.environment.pests.complaint_type: Uniform has no complaint type 'PEST' in SRRECTYPE" in \
        checked.stderr, checked.stderr
    assert "1 problem(s) found." in checked.stderr

    mapping = yaml.safe_load((mappings / "uniform.yaml").read_text())
    mapping["how_received"]["web"] = "WWW"
    mapping["customer_type"] = "RESIDENT"
    mapping["closing_actions"]["GONE"] = "fixed"
    (mappings / "uniform.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
    checked = run_broker("check", env=env, cwd=tmp_path)
    for problem in ("how_received.web: Uniform has no code 'WWW' in SRRECHOW",
                    "customer_type: Uniform has no code 'RESIDENT' in SRCUSTTYPE",
                    "closing_actions.GONE: Uniform has no code 'GONE' in SRCLOSEACT"):
        assert problem in checked.stderr, checked.stderr
    assert "uniform.yaml:" in checked.stderr and "4 problem(s) found." in checked.stderr


def test_codes_need_a_list_or_save_and_a_uniform_target(tmp_path: Path) -> None:
    env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"))
    neither = run_broker("uniform", "codes", env=env, cwd=tmp_path)
    assert neither.returncode == 2 and "Name a code list" in neither.stdout
    wrong = run_broker("uniform", "codes", "SRRECTYPE", "--target", "crm", env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and "No Uniform target 'crm'" in wrong.stdout


def test_wrong_credentials_are_reported_by_the_codes_command(simulator: UniformSimulator, tmp_path: Path) -> None:
    env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"))
    env.update(CASEBRIDGE_UNIFORM_URL=simulator.url, CASEBRIDGE_UNIFORM_PASSWORD="wrong")
    result = run_broker("uniform", "codes", "SRRECTYPE", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "uniform_authentication" in result.stdout


@pytest.mark.slow
def test_the_demo_carries_a_noise_complaint_to_uniform_and_its_closure_back(tmp_path: Path) -> None:
    with running_demo(tmp_path) as (demo, client):
        complaint = case_created("DEMO-N1", service_code="environment.noise", description="Loud party every night")
        assert client.post("/v1/cases", json=complaint).status_code == 202
        deadline = time.monotonic() + 90  # the officer moves it on every ten seconds: investigating, then fixed
        while client.get("/v1/cases/DEMO-N1").json()["status"] != "fixed":
            assert time.monotonic() < deadline, demo.output()
            time.sleep(0.5)
        assert client.get("/v1/cases/DEMO-N1").json()["external_refs"]["uniform"].endswith("/SR")
        entries = client.get("/v1/cases/DEMO-N1/history").json()["entries"]
        from_uniform = [entry for entry in entries if (entry["step"], entry["actor"]) == ("received", "target:uniform")]
        assert len(from_uniform) == 2  # investigating, then fixed
        demo.wait_for_output("received case.status_changed for case DEMO-N1")  # the CRM stand-in heard of it


def test_codes_are_saved_as_far_as_a_strict_uniform_offers_them(tmp_path: Path) -> None:
    """A Uniform without SRCLOSEACT: the other lists are saved, one warning names it, and `broker check` does not
    judge the closing actions."""
    for simulator in UNIFORM.simulated(profile="strict"):
        mappings, env = UNIFORM.command_env(tmp_path, simulator.url)
        saved = run_broker("uniform", "codes", "--save", env=env, cwd=tmp_path)
        assert saved.returncode == 0, saved.stdout + saved.stderr
        warnings = [line for line in saved.stdout.splitlines() if line.startswith("Warning:")]
        assert len(warnings) == 1 and "SRCLOSEACT" in warnings[0], saved.stdout
        assert "does not exist" in warnings[0]
        lookups = yaml.safe_load((mappings / "uniform.lookups.yaml").read_text())
        assert set(lookups) == {"SRRECTYPE", "SRRECHOW", "SRCUSTTYPE"}

        mapping = yaml.safe_load((mappings / "uniform.yaml").read_text())
        mapping["closing_actions"]["GONE"] = "fixed"  # not judged: SRCLOSEACT was not saved
        mapping["how_received"]["web"] = "WWW"  # judged
        (mappings / "uniform.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
        checked = run_broker("check", env=env, cwd=tmp_path)
        assert "how_received.web: Uniform has no code 'WWW' in SRRECHOW" in checked.stderr, checked.stderr
        assert "SRCLOSEACT" not in checked.stderr and "1 problem(s) found." in checked.stderr
