"""Find adapter plugins through the ``casebridge.adapters`` entry point group, lazily and cached."""

from __future__ import annotations

import difflib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from broker.errors import CasebridgeError
from broker.plugins.contract import Adapter, AdapterConfigInvalid, AdapterMappingInvalid, Sandbox

__all__ = ["ENTRY_POINT_GROUP", "SANDBOX_GROUP", "AdapterConfigInvalid", "AdapterMappingInvalid", "UnknownAdapter",
           "adapter_class", "available_adapters", "build_adapter", "register_adapter", "sandboxes"]

ENTRY_POINT_GROUP = "casebridge.adapters"
#: Stand-ins for LOB systems that adapters ship, under the adapter's name (``broker run --demo`` starts them).
SANDBOX_GROUP = "casebridge.sandboxes"


class UnknownAdapter(CasebridgeError):
    pass


#: Adapters registered in this process without an entry point (:func:`register_adapter`), by name.
_REGISTERED: dict[str, type[Adapter[Any]]] = {}


def register_adapter(name: str, cls: type[Adapter[Any]] | None) -> None:
    """Make ``cls`` the adapter called ``name`` in this process, as if an installed package named it in the entry
    point group (the contract kit does this for an adapter it tests before the adapter is installed); ``None``
    takes it away again."""
    if cls is None:
        _REGISTERED.pop(name, None)
    else:
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise UnknownAdapter(f"{cls!r} is not an Adapter subclass")
        _REGISTERED[name] = cls
    adapter_class.cache_clear()


@cache
def available_adapters() -> dict[str, Any]:
    """Adapter name -> entry point (not yet imported)."""
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def adapter_class(name: str) -> type[Adapter[Any]]:
    if name in _REGISTERED:
        return _REGISTERED[name]
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
    """The adapter ``name`` for ``target``, its settings and mapping validated (AdapterConfigInvalid,
    AdapterMappingInvalid)."""
    return adapter_class(name)(target, settings, mapping)


def sandboxes() -> dict[str, type[Sandbox]]:
    """Every installed adapter's sandbox, by adapter name, loaded."""
    found: dict[str, type[Sandbox]] = {}
    for entry in entry_points(group=SANDBOX_GROUP):
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Sandbox)):
            raise UnknownAdapter(f"sandbox entry point {entry.name!r} does not name a Sandbox subclass")
        found[entry.name] = cls
    return dict(sorted(found.items()))
