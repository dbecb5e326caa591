"""The SDK is one import surface, documented and stable: the fourth adapter needs nothing else from broker, the
tutorial lists every public name, and the base class does the validation the adapters no longer repeat."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from support.harness import REPO

import broker.sdk
from adapters.alloy.adapter import AlloyAdapter
from adapters.alloy.config import AlloyConfig, AlloyMapping
from adapters.confirm.adapter import ConfirmAdapter
from adapters.uniform.adapter import UniformAdapter
from adapters.webhook.adapter import WebhookAdapter
from broker.sdk import Adapter, AdapterConfigInvalid, AdapterMappingInvalid, Capability, Settings


def broker_imports(folder: Path) -> set[str]:
    """What the adapter's modules import from broker; its ``broker <system>`` commands (cli.py) plug into the CLI
    and may import the CLI's helpers."""
    found = set()
    for path in folder.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("broker"):
                found.add(node.module or "")
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("broker")}
    return found


def test_the_fourth_adapter_imports_nothing_from_broker_but_the_sdk() -> None:
    assert broker_imports(REPO / "adapters" / "alloy") == {"broker.sdk"}


def test_the_shipped_adapters_import_the_sdk_not_the_core() -> None:
    for name in ("webhook", "confirm", "uniform"):
        assert broker_imports(REPO / "adapters" / name) == {"broker.sdk"}, name


def test_every_public_name_is_in_the_tutorial() -> None:
    tutorial = (REPO / "docs" / "adapters" / "writing-an-adapter.md").read_text()
    missing = [name for name in broker.sdk.__all__ if f"`{name}`" not in tutorial]
    assert missing == []


@pytest.mark.parametrize("adapter", [WebhookAdapter, ConfirmAdapter, UniformAdapter, AlloyAdapter])
def test_the_models_come_from_the_generic_arguments_and_no_adapter_validates_its_own(
        adapter: type[Adapter[Any]]) -> None:
    assert adapter.config_model is not None and adapter.mapping_model is not None
    assert issubclass(adapter.config_model, Settings.__mro__[1]) and adapter.mapping_model.__name__.endswith("Mapping")
    assert "mapping_problems" not in vars(adapter)  # the base class's, from mapping_model
    assert adapter.capabilities <= set(Capability)


def test_settings_and_mapping_are_validated_once_in_the_base_class_naming_each_field() -> None:
    assert (AlloyAdapter.config_model, AlloyAdapter.mapping_model) == (AlloyConfig, AlloyMapping)
    with pytest.raises(AdapterConfigInvalid) as bad_settings:
        AlloyAdapter("waste", {"url": "not a url", "colour": "red"}, {"services": {}})
    fields = {loc for loc, _ in bad_settings.value.errors}
    assert {"url", "colour", "api_key_env", "design_code"} <= fields
    with pytest.raises(AdapterMappingInvalid) as bad_mapping:
        AlloyAdapter("waste", {"url": "http://127.0.0.1/api/", "api_key_env": "K", "design_code": "d",
                               "reference_attribute": "r", "description_attribute": "d", "status_attribute": "s"},
                     {"services": {"x": {"attributes": {}}}, "statuses": {"id": "not-a-status"}})
    assert [path for path, _ in bad_mapping.value.problems] == [("statuses", "id")]
    built = AlloyAdapter("waste", AlloyConfig(url="http://127.0.0.1/api/", api_key_env="K", design_code="d",
                                              reference_attribute="r", description_attribute="d",
                                              status_attribute="s"), AlloyMapping(services={}))
    assert isinstance(built.mapping, AlloyMapping) and isinstance(built.config, AlloyConfig)
    built.close()
