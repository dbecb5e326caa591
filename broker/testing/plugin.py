"""The contract kit's pytest plugin (entry point ``pytest11``): ``--real`` runs the suites against a real LOB test
system instead of the sandbox, ``--update-golden`` records golden files afresh."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("casebridge", "Casebridge adapter contract kit")
    group.addoption("--real", action="store_true", default=False,
                    help="run adapter contract suites against a real LOB test system (CASEBRIDGE_CONTRACT_REAL_URL) "
                         "instead of the adapter's sandbox; also CASEBRIDGE_CONTRACT_REAL=1")
    group.addoption("--update-golden", action="store_true", default=False,
                    help="record adapter golden files afresh against the sandbox instead of comparing with them")
