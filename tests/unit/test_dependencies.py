"""Installs are reproducible: every runtime dependency has an upper bound and a pinned version in the lock files
the image and CI install from; the AMQP clients used only by tests and benchmarks are not runtime dependencies."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from support.harness import REPO


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(lock: str) -> dict[str, Version]:
    text = (REPO / "requirements" / lock).read_text()
    return {canonicalize_name(name): Version(version)
            for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE)}


def test_every_runtime_dependency_is_bounded_above_and_pinned_within_its_range() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    locked = pinned("runtime.lock")
    for line in project["dependencies"]:
        requirement = Requirement(line)
        assert any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier), line
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not pinned in requirements/runtime.lock"
        assert requirement.specifier.contains(locked[name]), f"{name} {locked[name]} is outside {requirement}"


def test_the_test_lock_holds_the_runtime_pins_and_the_test_tools() -> None:
    runtime, test = pinned("runtime.lock"), pinned("test.lock")
    assert {name: version for name, version in test.items() if name in runtime} == runtime
    for line in pyproject()["project"]["optional-dependencies"]["test"]:  # type: ignore[index]
        assert canonicalize_name(Requirement(line).name) in test, line


def test_the_amqp_test_clients_are_not_runtime_dependencies() -> None:
    assert not {"pika", "aio-pika"} & set(pinned("runtime.lock"))


def test_the_image_and_ci_install_from_the_locks() -> None:
    assert "pip install -r requirements/runtime.lock" in (REPO / "docker" / "Dockerfile").read_text()
    assert "pip install -q -r requirements/test.lock" in (REPO / "scripts" / "test.sh").read_text()
