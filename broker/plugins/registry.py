"""Find adapter plugins through the ``casebridge.adapters`` entry point group, lazily and cached."""

from __future__ import annotations

import difflib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from broker.errors import CasebridgeError
from broker.plugins.contract import Adapter, Sandbox

ENTRY_POINT_GROUP = "casebridge.adapters"
#: Stand-ins for LOB systems that adapters ship, under the adapter's name (``broker run --demo`` starts them).
SANDBOX_GROUP = "casebridge.sandboxes"


class UnknownAdapter(CasebridgeError):
    pass


class AdapterConfigInvalid(CasebridgeError):
    def __init__(self, target: str, error: ValidationError) -> None:
        self.errors = [
            (".".join(str(part) for part in item["loc"]), item["msg"]) for item in error.errors()
        ]
        super().__init__(
            f"target {target!r}: " + "; ".join(f"settings.{loc}: {msg}" for loc, msg in self.errors)
        )


@cache
def available_adapters() -> dict[str, Any]:
    """Adapter name -> entry point (not yet imported)."""
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def adapter_class(name: str) -> type[Adapter[Any]]:
    entries = available_adapters()
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownAdapter(
            f"no adapter named {name!r} (installed: {', '.join(sorted(entries)) or 'none'}).{hint}"
        )
    cls = entries[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise UnknownAdapter(f"entry point {name!r} does not name an Adapter subclass")
    return cls


def build_adapter(name: str, target: str, settings: dict[str, Any], mapping: dict[str, Any]) -> Adapter[Any]:
    cls = adapter_class(name)
    try:
        config = cls.config_model.model_validate(settings)
    except ValidationError as exc:
        raise AdapterConfigInvalid(target, exc) from exc
    return cls(target, config, mapping)


def sandboxes() -> dict[str, type[Sandbox]]:
    """Every installed adapter's sandbox, by adapter name, loaded."""
    found: dict[str, type[Sandbox]] = {}
    for entry in entry_points(group=SANDBOX_GROUP):
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Sandbox)):
            raise UnknownAdapter(f"sandbox entry point {entry.name!r} does not name a Sandbox subclass")
        found[entry.name] = cls
    return dict(sorted(found.items()))
