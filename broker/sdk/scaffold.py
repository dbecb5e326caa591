"""``broker adapter new <name>``: an installable adapter package that passes its own contract tests at once.

It holds the entry points (``casebridge.adapters`` and ``casebridge.sandboxes``), config and mapping models, an
adapter written with :mod:`broker.sdk` for a made-up JSON API, a simulator of that API as its sandbox, a test module
subclassing the contract kit's suites, and a README. The author then changes the adapter and the simulator to the
LOB system's own API, one suite at a time.
"""

from __future__ import annotations

import re
from pathlib import Path

_TEMPLATES = Path(__file__).with_name("scaffold_templates")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: Template -> where it goes in the package folder (``{package}`` is replaced).
_LAYOUT = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "{package}/__init__.py",
    "config.py.tmpl": "{package}/config.py",
    "adapter.py.tmpl": "{package}/adapter.py",
    "simulator.py.tmpl": "{package}/simulator.py",
    "sandbox.py.tmpl": "{package}/sandbox.py",
    "test_contract.py.tmpl": "tests/test_contract.py",
}


class ScaffoldRefused(ValueError):
    """The name is not one an adapter can have, or the folder exists already."""


def scaffold(name: str, parent: Path, *, title: str | None = None) -> Path:
    """Write the package ``casebridge-<name>`` under ``parent``; returns its folder."""
    if not _NAME.fullmatch(name):
        raise ScaffoldRefused(f"{name!r} cannot name an adapter: use lower-case letters, digits and underscores, "
                              "starting with a letter (it becomes the entry point and the package name)")
    folder = parent / f"casebridge-{name.replace('_', '-')}"
    if folder.exists():
        raise ScaffoldRefused(f"{folder} exists already: nothing was written")
    values = {
        "name": name,
        "package": f"casebridge_{name}",
        "cls": "".join(part.capitalize() for part in name.split("_")),
        "title": title or " ".join(part.capitalize() for part in name.split("_")),
        "env": f"CASEBRIDGE_{name.upper()}",
    }
    for template, target in _LAYOUT.items():
        path = folder / target.format(**values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((_TEMPLATES / template).read_text().format(**values))
    return folder
