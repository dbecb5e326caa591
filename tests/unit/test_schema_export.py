"""The published JSON Schema is current, and agrees with the pydantic model on what is valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support.envelopes import case_created, envelope, note_added, status_changed
from typer.testing import CliRunner

from broker.cli.main import app
from broker.model import SCHEMA_VERSION, EventType
from broker.model.schema import event_schema, render_schema, schema_filename

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "schema" / schema_filename()


def test_published_schema_matches_the_model() -> None:
    assert PUBLISHED.exists(), f"{PUBLISHED} is missing: run `broker schema export`"
    assert PUBLISHED.read_text(encoding="utf-8") == render_schema(), (
        "docs/schema is out of date with the model: run `broker schema export`"
    )


def test_schema_names_its_version_and_every_event_type() -> None:
    schema = event_schema()
    assert SCHEMA_VERSION in schema["title"]
    assert set(schema["discriminator"]["mapping"]) == {event_type.value for event_type in EventType}
    jsonschema.Draft202012Validator.check_schema(schema)


def test_export_command_writes_the_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "export", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / schema_filename()).read_text()) == event_schema()


VALID = [
    case_created(),
    case_created(location={"uprn": "100023336956"}, reporter={"kind": "anonymous"}),
    note_added("CRM-1"),
    status_changed("CRM-1", "in_progress"),
    envelope("case.closed", case={"case_id": "CRM-1"}, change={"status": "closed"}),
]

INVALID = [
    {**case_created(), "occurred_at": "2026-11-23T09:00:00"},  # no time zone
    {**case_created(), "event_id": "not-a-uuid"},
    {**case_created(), "surprise": 1},
    case_created(location={}),
    case_created(channel="carrier_pigeon"),
    envelope("case.exploded", case={"case_id": "CRM-1"}),
    case_created(location={"lat": True, "lon": False}),  # booleans are not coordinates
    {**case_created(), "occurred_at": 1700000000},  # nor is a bare number a time
]


@pytest.mark.parametrize("document", VALID, ids=lambda d: d["event_type"])
def test_schema_accepts_what_the_model_accepts(document: dict[str, Any]) -> None:
    from broker.model import parse_event

    parse_event(json.dumps(document).encode())
    jsonschema.Draft202012Validator(event_schema(), format_checker=jsonschema.FormatChecker()).validate(document)


@pytest.mark.parametrize("document", INVALID)
def test_schema_rejects_what_the_model_rejects(document: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from broker.model import parse_event

    with pytest.raises(ValidationError):
        parse_event(json.dumps(document).encode())
    validator = jsonschema.Draft202012Validator(event_schema(), format_checker=jsonschema.FormatChecker())
    assert not validator.is_valid(document)
