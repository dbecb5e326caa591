"""The canonical model's published JSON Schema, one file per schema version under ``docs/schema/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from broker.model.events import EVENT_ADAPTER, SCHEMA_VERSION

SCHEMA_ID_BASE = "urn:casebridge:schema"


def schema_filename(version: str = SCHEMA_VERSION) -> str:
    return f"event-v{version}.schema.json"


def event_schema() -> dict[str, Any]:
    """The JSON Schema of an event envelope as senders must write it (validation mode)."""
    schema = EVENT_ADAPTER.json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_ID_BASE}/{schema_filename()}",
        "title": f"Casebridge case event, schema version {SCHEMA_VERSION}",
        **schema,
    }


def render_schema() -> str:
    return json.dumps(event_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_schema(directory: Path) -> Path:
    """Write the schema file into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / schema_filename()
    path.write_text(render_schema(), encoding="utf-8")
    return path
