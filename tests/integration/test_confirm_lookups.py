"""`broker confirm lookups --save` keeps Confirm's codes; `broker check` then names every mapping code it lacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.harness import REPO
from support.processes import broker_env, run_broker
from support.soap_targets import CONFIRM

from adapters.confirm.simulator import ConfirmSimulator


@pytest.fixture
def simulator() -> Iterator[ConfirmSimulator]:
    yield from CONFIRM.simulated()


def test_saved_lookups_let_check_report_unknown_codes(simulator: ConfirmSimulator, tmp_path: Path) -> None:
    mappings, env = CONFIRM.command_env(tmp_path, simulator.url)
    del simulator.services["SL"]  # this council's Confirm has no street lighting service

    saved = run_broker("confirm", "lookups", "--save", env=env, cwd=tmp_path)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    lookups = yaml.safe_load((mappings / "confirm.lookups.yaml").read_text())
    assert lookups["services"]["HW"] == ["DRN", "POT", "SIGN"] and "4000" in lookups["statuses"]

    assert lookups["attribute_values"] == {"HAZD": ["CYC", "PED", "VEH"]}
    assert "TEL" in lookups["enquiry_methods"] and lookups["points_of_contact"] == ["CB", "CC"]

    # The mapping as shipped agrees with this Confirm but for street lighting.
    checked = run_broker("check", env=env, cwd=tmp_path)
    assert "1 problem(s) found." in checked.stderr, checked.stderr

    mapping = yaml.safe_load((mappings / "confirm.yaml").read_text())
    mapping["status_codes"]["fixed"] = "4100"
    mapping["enquiry_methods"]["web"] = "WWW"
    mapping["customer_type"] = "RES"
    mapping["attributes"]["hazard"]["values"]["cyclists"] = "BIKE"
    mapping["attributes"]["first_noticed"]["type"] = "string"
    (mappings / "confirm.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
    checked = run_broker("check", env=env, cwd=tmp_path)
    assert checked.returncode == 1
    for problem in ("services.highways.street_light.service: Confirm has no service code 'SL'",
                    "status_codes.fixed: Confirm has no enquiry status code '4100'",
                    "enquiry_methods.web: Confirm has no enquiry method code 'WWW'",
                    "customer_type: Confirm has no customer type code 'RES'",
                    "attributes.hazard.values.cyclists: Confirm attribute type 'HAZD' has no value code 'BIKE'",
                    "attributes.first_noticed.type: Confirm attribute type 'SEEN' has flag 'D'"):
        assert problem in checked.stderr, checked.stderr
    assert "confirm.yaml:" in checked.stderr
    assert "6 problem(s) found." in checked.stderr


def test_lookups_for_a_target_that_is_not_confirm_is_refused(tmp_path: Path) -> None:
    env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"))
    result = run_broker("confirm", "lookups", "--target", "crm", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "No Confirm target 'crm'" in result.stdout


def test_lookups_are_saved_as_far_as_a_strict_confirm_offers_them(tmp_path: Path) -> None:
    """A Confirm without GetCustomerLookups: the rest is saved, one warning names what is missing, and `broker check`
    judges only what was saved."""
    for simulator in CONFIRM.simulated(profile="strict"):
        mappings, env = CONFIRM.command_env(tmp_path, simulator.url)
        assert "GetCustomerLookups" in simulator.missing_operations
        saved = run_broker("confirm", "lookups", "--save", env=env, cwd=tmp_path)
        assert saved.returncode == 0, saved.stdout + saved.stderr
        warnings = [line for line in saved.stdout.splitlines() if line.startswith("Warning:")]
        assert len(warnings) == 1 and "GetCustomerLookups" in warnings[0], saved.stdout
        assert "Unknown operation GetCustomerLookups" in warnings[0]
        lookups = yaml.safe_load((mappings / "confirm.lookups.yaml").read_text())
        assert lookups["services"]["HW"] == ["DRN", "POT", "SIGN"] and "4000" in lookups["statuses"]
        assert not {"enquiry_methods", "customer_types", "points_of_contact"} & set(lookups)

        mapping = yaml.safe_load((mappings / "confirm.yaml").read_text())
        mapping["customer_type"] = "RES"  # not judged: the customer codes were not saved
        mapping["status_codes"]["fixed"] = "4100"  # judged
        (mappings / "confirm.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
        checked = run_broker("check", env=env, cwd=tmp_path)
        assert "status_codes.fixed: Confirm has no enquiry status code '4100'" in checked.stderr, checked.stderr
        assert "customer type" not in checked.stderr
        assert "1 problem(s) found." in checked.stderr
