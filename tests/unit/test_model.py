"""The canonical model: what a sender may send, and how each mistake is named."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError
from support.envelopes import case_created, envelope, note_added, status_changed

from broker.model import (
    SCHEMA_VERSION,
    AnonymousReporter,
    Attachment,
    CaseClosed,
    CaseCreated,
    CaseNoteAdded,
    CaseStatus,
    CaseStatusChanged,
    CaseUpdated,
    Channel,
    EventType,
    IdentifiedReporter,
    Location,
    Person,
    RepresentativeReporter,
    parse_event,
)
from broker.model.events import EVENT_ADAPTER, FOLLOW_UP_ADAPTER, status_after

Loc = tuple[str | int, ...]

ATTACHMENT = {"url": "https://example.org/photos/pothole.jpg", "name": "pothole.jpg", "content_type": "image/jpeg"}


def parse(document: dict[str, Any]) -> Any:
    return parse_event(json.dumps(document).encode())


def errors_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        parse(document)
    return list(caught.value.errors())


def error_locations(document: dict[str, Any]) -> list[Loc]:
    return [tuple(error["loc"]) for error in errors_of(document)]


def the_error_at(document: dict[str, Any], loc: Loc) -> dict[str, Any]:
    """The one error reported at ``loc`` (fails, listing what was reported, if there is none)."""
    errors = errors_of(document)
    found = [error for error in errors if tuple(error["loc"]) == loc]
    assert len(found) == 1, [(error["loc"], error["msg"]) for error in errors]
    return found[0]


def case_without(field: str) -> dict[str, Any]:
    document = case_created()
    del document["case"][field]
    return document


CASE = ("case.created", "case")
LOCATION = (*CASE, "location")
PERSON = (*CASE, "reporter", "person", "person")


# --- Valid envelopes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", list(Channel))
def test_a_case_created_parses_for_every_channel(channel: Channel) -> None:
    document = case_created("CRM-42", channel=channel.value)
    event = parse(document)
    assert type(event) is CaseCreated
    assert event.event_type is EventType.created
    assert event.case.channel is channel
    assert event.case.case_id == "CRM-42"
    assert event.case.service_code == "highways.pothole"
    assert event.event_id == uuid.UUID(document["event_id"])
    assert event.source == "crm"
    assert event.schema_version == SCHEMA_VERSION
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.case.status is CaseStatus.open
    assert event.case.attributes == {"depth_mm": 80, "on_road": True}


def test_channels_are_the_documented_seven() -> None:
    assert {channel.value for channel in Channel} == {
        "web", "app", "phone", "face_to_face", "email", "post", "social"}
    assert "carrier_pigeon" not in {channel.value for channel in Channel}
    assert error_locations(case_created(channel="carrier_pigeon")) == [(*CASE, "channel")]


def test_case_defaults() -> None:
    document = case_created()
    for optional in ("reporter", "wants_updates", "attributes"):
        del document["case"][optional]
    case = parse(document).case
    assert isinstance(case.reporter, AnonymousReporter)
    assert case.wants_updates is False
    assert case.attributes == {}
    assert case.attachments == []
    assert case.status is CaseStatus.open
    assert case.external_refs == {}


EVERY_EVENT_TYPE = [
    pytest.param(case_created("C-1"), CaseCreated, id="case.created"),
    pytest.param(envelope("case.updated", case={**case_created("C-1")["case"], "status": "in_progress"}),
                 CaseUpdated, id="case.updated"),
    pytest.param(note_added("C-1", "Resident called again"), CaseNoteAdded, id="case.note_added"),
    pytest.param(status_changed("C-1", "action_scheduled"), CaseStatusChanged, id="case.status_changed"),
    pytest.param(envelope("case.closed", case={"case_id": "C-1"},
                          change={"status": "fixed", "reason": "Repaired on Tuesday"}), CaseClosed, id="case.closed"),
]


@pytest.mark.parametrize(("document", "model"), EVERY_EVENT_TYPE)
def test_every_event_type_parses_to_its_own_class(document: dict[str, Any], model: type) -> None:
    event = parse(document)
    assert type(event) is model
    assert event.event_type.value == document["event_type"]
    assert event.case_id == "C-1"


@pytest.mark.parametrize(("document", "model"), EVERY_EVENT_TYPE)
def test_every_event_type_round_trips_through_json(document: dict[str, Any], model: type) -> None:
    event = parse(document)
    dumped = event.model_dump_json()
    again = parse_event(dumped)
    assert type(again) is model
    assert again == event
    assert again.model_dump_json() == dumped
    # The wire form names the event type by its dotted value and keeps the sender's fields.
    wire = json.loads(dumped)
    assert wire["event_type"] == document["event_type"]
    assert wire["event_id"] == document["event_id"]
    assert wire["case"]["case_id"] == "C-1"


@pytest.mark.parametrize(("document", "model"), EVERY_EVENT_TYPE)
def test_every_event_type_round_trips_without_nulls(document: dict[str, Any], model: type) -> None:
    """Adapters send ``exclude_none`` dumps; those must still be valid envelopes."""
    event = parse(document)
    compact = event.model_dump(mode="json", exclude_none=True)
    assert "correlation_id" not in compact
    assert EVENT_ADAPTER.validate_python(compact) == event


def test_the_details_of_follow_up_events_are_kept() -> None:
    note = parse(envelope("case.note_added", case={"case_id": "C-1"},
                          note={"text": "Crew on site", "author": "J Bloggs", "internal": True}))
    assert (note.note.text, note.note.author, note.note.internal) == ("Crew on site", "J Bloggs", True)
    assert parse(note_added("C-1")).note.internal is False

    change = parse(envelope("case.status_changed", case={"case_id": "C-1"},
                            change={"status": "not_councils_responsibility", "reason": "Private road",
                                    "external_status_code": "NCR"}))
    assert change.change.status is CaseStatus.not_councils_responsibility
    assert change.change.external_status_code == "NCR"


def test_a_closed_event_defaults_its_status_to_closed() -> None:
    event = parse(envelope("case.closed", case={"case_id": "C-1"}))
    assert isinstance(event, CaseClosed)
    assert event.change.status is CaseStatus.closed
    assert event.change.reason is None


def test_status_after_each_event() -> None:
    assert status_after(parse(case_created(status="investigating")), CaseStatus.open) is CaseStatus.investigating
    assert status_after(parse(status_changed("C-1", "fixed")), CaseStatus.open) is CaseStatus.fixed
    assert status_after(parse(envelope("case.closed", case={"case_id": "C-1"})), CaseStatus.open) is CaseStatus.closed
    assert status_after(parse(note_added("C-1")), CaseStatus.in_progress) is CaseStatus.in_progress


def test_correlation_id_defaults_to_the_event_id() -> None:
    event = parse(case_created())
    assert event.correlation_id is None
    assert event.effective_correlation_id == str(event.event_id)
    assert parse({**case_created(), "correlation_id": "conv-9"}).effective_correlation_id == "conv-9"
    assert ("case.created", "correlation_id") in error_locations({**case_created(), "correlation_id": ""})


def test_follow_up_adapter_refuses_a_created_event() -> None:
    with pytest.raises(ValidationError) as caught:
        FOLLOW_UP_ADAPTER.validate_python(case_created())
    assert caught.value.errors()[0]["type"] == "union_tag_invalid"
    assert isinstance(FOLLOW_UP_ADAPTER.validate_python(note_added("C-1")), CaseNoteAdded)


# --- Envelope mistakes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("occurred_at", ["2026-11-23T09:00:00", "2026-11-23 09:00:00", "2026-11-23T09:00:00.123456"])
def test_a_naive_occurred_at_is_refused(occurred_at: str) -> None:
    error = the_error_at({**case_created(), "occurred_at": occurred_at}, ("case.created", "occurred_at"))
    assert error["type"] == "timezone_aware"


@pytest.mark.parametrize(("occurred_at", "offset"), [
    ("2026-11-23T09:00:00Z", timedelta(0)),
    ("2026-11-23T09:00:00+00:00", timedelta(0)),
    ("2026-06-23T10:00:00+01:00", timedelta(hours=1)),
    ("2026-06-23T04:00:00-05:00", timedelta(hours=-5)),
])
def test_an_aware_occurred_at_keeps_its_offset(occurred_at: str, offset: timedelta) -> None:
    event = parse({**case_created(), "occurred_at": occurred_at})
    assert event.occurred_at.utcoffset() == offset
    assert event.occurred_at == datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))


@pytest.mark.parametrize("occurred_at", ["yesterday", "", "2026-13-01T00:00:00Z", None])
def test_an_occurred_at_that_is_not_a_time_is_refused(occurred_at: Any) -> None:
    assert error_locations({**case_created(), "occurred_at": occurred_at}) == [("case.created", "occurred_at")]


@pytest.mark.parametrize("event_id", ["not-a-uuid", "", "1234", "g" * 32, "123e4567-e89b-12d3-a456-42661417400", 42])
def test_an_invalid_event_id_is_refused(event_id: Any) -> None:
    error = the_error_at({**case_created(), "event_id": event_id}, ("case.created", "event_id"))
    assert error["type"] in {"uuid_parsing", "uuid_type"}


def test_an_event_id_is_required() -> None:
    document = case_created()
    del document["event_id"]
    assert the_error_at(document, ("case.created", "event_id"))["type"] == "missing"


@pytest.mark.parametrize("source", ["", "CRM", "-crm", "crm portal", "x" * 65])
def test_an_invalid_source_is_refused(source: str) -> None:
    assert error_locations({**case_created(), "source": source}) == [("case.created", "source")]


@pytest.mark.parametrize("source", ["crm", "portal", "confirm", "crm-2.test_a", "x" * 64])
def test_a_valid_source_is_accepted(source: str) -> None:
    assert parse({**case_created(), "source": source}).source == source


def test_an_unknown_event_type_is_refused() -> None:
    errors = errors_of(envelope("case.exploded", case={"case_id": "C-1"}))
    assert [error["type"] for error in errors] == ["union_tag_invalid"]
    assert "case.exploded" in errors[0]["msg"]


def test_a_missing_event_type_is_refused() -> None:
    document = case_created()
    del document["event_type"]
    assert [error["type"] for error in errors_of(document)] == ["union_tag_not_found"]


# --- schema_version ---------------------------------------------------------------------------------------------


def test_the_schema_version_is_one_point_oh() -> None:
    assert SCHEMA_VERSION == "1.0"


def test_a_missing_schema_version_means_the_current_one() -> None:
    document = case_created()
    del document["schema_version"]
    assert parse(document).schema_version == "1.0"


@pytest.mark.parametrize("version", ["2.0", "1", "1.1", "0.9", "", 1.0, 1])
def test_any_other_schema_version_is_refused(version: Any) -> None:
    error = the_error_at({**case_created(), "schema_version": version}, ("case.created", "schema_version"))
    assert error["type"] == "literal_error"
    assert "'1.0'" in error["msg"]


# --- Unknown fields ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "where"), [
    ({**case_created(), "surprise": True}, ("case.created", "surprise")),
    ({**note_added("C-1"), "priority": "high"}, ("case.note_added", "priority")),
])
def test_an_unknown_top_level_field_is_refused(document: dict[str, Any], where: Loc) -> None:
    assert the_error_at(document, where)["type"] == "extra_forbidden"


def extra_in(path: tuple[str, ...], document: dict[str, Any] | None = None) -> dict[str, Any]:
    document = copy.deepcopy(document or case_created())
    node = document
    for key in path:
        node = node[key]
    node["colour"] = "red"
    return document


@pytest.mark.parametrize(("document", "where"), [
    (extra_in(("case",)), (*CASE, "colour")),
    (extra_in(("case", "location")), (*LOCATION, "colour")),
    (extra_in(("case", "reporter")), (*CASE, "reporter", "person", "colour")),
    (extra_in(("case", "reporter", "person")), (*PERSON, "colour")),
    (extra_in(("case",), note_added("C-1")), ("case.note_added", "case", "colour")),
    (extra_in(("note",), note_added("C-1")), ("case.note_added", "note", "colour")),
    (extra_in(("change",), status_changed("C-1", "fixed")), ("case.status_changed", "change", "colour")),
    (case_created(attachments=[{**ATTACHMENT, "colour": "red"}]), (*CASE, "attachments", 0, "colour")),
], ids=["case", "location", "reporter", "person", "case-ref", "note", "change", "attachment"])
def test_an_unknown_field_inside_is_refused_where_it_is(document: dict[str, Any], where: Loc) -> None:
    error = the_error_at(document, where)
    assert error["type"] == "extra_forbidden"
    assert error["input"] == "red"


def test_a_created_event_does_not_accept_a_case_ref_and_a_note_does_not_accept_a_case() -> None:
    assert {loc[-1] for loc in error_locations(envelope("case.created", case={"case_id": "C-1"}))} == {
        "service_code", "channel", "description", "location"}
    full_case = case_created("C-1")["case"]
    locations = error_locations(envelope("case.note_added", case=full_case, note={"text": "x"}))
    assert ("case.note_added", "case", "service_code") in locations
    assert ("case.note_added", "case", "case_id") not in locations


# --- attributes -------------------------------------------------------------------------------------------------


def test_unknown_keys_inside_attributes_are_kept() -> None:
    attributes = {"depth_mm": 80, "council_specific.flag": True, "tags": ["a", "b"], "width-cm": 12.5,
                  "notes": "by the kerb", "photo_taken": None}
    event = parse(case_created(attributes=attributes))
    assert event.case.attributes == attributes
    assert json.loads(event.model_dump_json())["case"]["attributes"] == attributes


@pytest.mark.parametrize("value", [{"deep": 1}, [1, 2], ["a", 1], [["a"]], [None]])
def test_attribute_values_must_be_simple(value: Any) -> None:
    error = the_error_at(case_created(attributes={"odd": value}), (*CASE, "attributes", "odd"))
    assert error["type"] == "value_error"
    assert "must be a string, number, boolean, null or list of strings" in error["msg"]


@pytest.mark.parametrize("value", ["half \ud800 a pair", ["fine", "\udc00"]])
def test_attribute_text_must_be_real_text(value: Any) -> None:
    # As the HTTP API hands it over: parsed by the json module, which lets a lone surrogate escape through
    # (pydantic's own JSON parser refuses it before any field is looked at).
    with pytest.raises(ValidationError) as caught:
        EVENT_ADAPTER.validate_python(case_created(attributes={"odd": value}))
    assert [(error["loc"], error["msg"]) for error in caught.value.errors()] == [
        ((*CASE, "attributes", "odd"), "Value error, holds an unpaired surrogate escape, which is not text")]


@pytest.mark.parametrize("key", ["bad key", "bad!", "", "k" * 65, "é"])
def test_attribute_keys_are_restricted(key: str) -> None:
    locations = error_locations(case_created(attributes={key: 1}))
    assert locations == [(*CASE, "attributes", key, "[key]")]


# --- Location ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("location", [
    {"uprn": "100023336956"}, {"uprn": "1"}, {"usrn": "8400123"}, {"address": "12 High Street"},
    {"postcode": "SW1A 1AA"}, {"postcode": "M1 1AE"}, {"easting": 530000, "northing": 180000},
    {"easting": 0, "northing": 0}, {"easting": 700_000, "northing": 1_300_000},
    {"lat": 51.5, "lon": -0.12}, {"lat": 0, "lon": 0}, {"lat": -90, "lon": -180}, {"lat": 90, "lon": 180},
    {"address": "12 High Street", "description": "outside number 12"},
])
def test_any_one_location_identifier_is_enough(location: dict[str, Any]) -> None:
    parsed = parse(case_created(location=location)).case.location
    for key, value in location.items():
        assert getattr(parsed, key) == value


def test_a_postcode_is_upper_cased() -> None:
    assert parse(case_created(location={"postcode": "sw1a 1aa"})).case.location.postcode == "SW1A 1AA"
    assert parse(case_created(location={"postcode": "m11ae"})).case.location.postcode == "M11AE"


@pytest.mark.parametrize("location", [{}, {"description": "near the lamp post"},
                                      {"uprn": None, "usrn": None, "address": None}])
def test_a_location_without_any_identifier_is_refused(location: dict[str, Any]) -> None:
    error = the_error_at(case_created(location=location), LOCATION)
    assert error["type"] == "value_error"
    assert "give at least one of uprn, usrn, address, postcode, easting/northing, lat/lon" in error["msg"]


@pytest.mark.parametrize(("location", "message"), [
    ({"easting": 530000}, "easting and northing must be given together"),
    ({"northing": 180000}, "easting and northing must be given together"),
    ({"northing": 180000, "uprn": "100023336956"}, "easting and northing must be given together"),
    ({"lat": 51.5}, "lat and lon must be given together"),
    ({"lon": -0.12}, "lat and lon must be given together"),
    ({"lat": 51.5, "address": "12 High Street"}, "lat and lon must be given together"),
])
def test_half_a_coordinate_pair_is_refused_even_beside_another_identifier(location: dict[str, Any],
                                                                          message: str) -> None:
    error = the_error_at(case_created(location=location), LOCATION)
    assert message in error["msg"]


@pytest.mark.parametrize(("location", "field"), [
    ({"lat": 90.0001, "lon": 0}, "lat"), ({"lat": -91, "lon": 0}, "lat"),
    ({"lat": 0, "lon": 180.5}, "lon"), ({"lat": 0, "lon": -181}, "lon"),
    ({"easting": -1, "northing": 1}, "easting"), ({"easting": 700_001, "northing": 1}, "easting"),
    ({"easting": 1, "northing": -1}, "northing"), ({"easting": 1, "northing": 1_300_001}, "northing"),
    ({"uprn": "12ab"}, "uprn"), ({"uprn": "1234567890123"}, "uprn"), ({"uprn": ""}, "uprn"),
    ({"usrn": "123456789"}, "usrn"), ({"postcode": "NOT A CODE"}, "postcode"), ({"postcode": "SW1A"}, "postcode"),
    ({"address": "   "}, "address"), ({"address": "x" * 501}, "address"),
    ({"uprn": "1", "description": "x" * 501}, "description"),
    ({"lat": "north", "lon": 0}, "lat"),
])
def test_a_bad_location_value_is_named(location: dict[str, Any], field: str) -> None:
    assert (*LOCATION, field) in error_locations(case_created(location=location))


def test_location_can_be_built_directly_and_refuses_emptiness() -> None:
    assert Location(uprn="100023336956").uprn == "100023336956"
    with pytest.raises(ValidationError, match="give at least one of"):
        Location()
    with pytest.raises(ValidationError, match="lat and lon must be given together"):
        Location(lat=51.5)


# --- Reporter ---------------------------------------------------------------------------------------------------


def test_an_omitted_reporter_is_anonymous() -> None:
    document = case_without("reporter")
    assert isinstance(parse(document).case.reporter, AnonymousReporter)
    assert parse(case_created(reporter={"kind": "anonymous"})).case.reporter == AnonymousReporter()


def test_an_anonymous_reporter_cannot_carry_personal_data() -> None:
    for extra in ({"person": {"name": "X"}}, {"name": "X"}, {"email": "x@example.org"}):
        document = case_created(reporter={"kind": "anonymous", **extra})
        (key,) = extra
        assert the_error_at(document, (*CASE, "reporter", "anonymous", key))["type"] == "extra_forbidden"


@pytest.mark.parametrize("person", [
    {"name": "Ada Lovelace"}, {"email": "ada@example.org"}, {"phone": "020 7946 0000"},
    {"phone": "+44 (0)20-7946-0000"},
    {"name": "Ada Lovelace", "email": "ada@example.org", "phone": "07700 900123", "address": "1 High St"},
])
def test_a_person_needs_a_name_email_or_phone(person: dict[str, Any]) -> None:
    reporter = parse(case_created(reporter={"kind": "person", "person": person})).case.reporter
    assert isinstance(reporter, IdentifiedReporter)
    assert reporter.kind == "person"
    for key, value in person.items():
        assert getattr(reporter.person, key) == value


@pytest.mark.parametrize("person", [{}, {"address": "1 High Street"}, {"name": None, "email": None}])
def test_a_person_with_no_way_to_reach_them_is_refused(person: dict[str, Any]) -> None:
    error = the_error_at(case_created(reporter={"kind": "person", "person": person}), PERSON)
    assert "give at least one of name, email, phone" in error["msg"]


def test_a_person_reporter_needs_the_person() -> None:
    assert the_error_at(case_created(reporter={"kind": "person"}), PERSON)["type"] == "missing"


def test_a_representative_reports_for_a_customer() -> None:
    reporter = parse(case_created(reporter={
        "kind": "representative", "role": "councillor",
        "representative": {"name": "Cllr Smith", "email": "cllr.smith@example.gov.uk"},
        "on_behalf_of": {"name": "A Resident", "phone": "01632 960000"},
    })).case.reporter
    assert isinstance(reporter, RepresentativeReporter)
    assert reporter.role == "councillor"
    assert reporter.representative == Person(name="Cllr Smith", email="cllr.smith@example.gov.uk")
    assert reporter.on_behalf_of == Person(name="A Resident", phone="01632 960000")


def test_a_representatives_role_is_optional() -> None:
    reporter = parse(case_created(reporter={
        "kind": "representative", "representative": {"name": "Carer"}, "on_behalf_of": {"name": "Resident"},
    })).case.reporter
    assert isinstance(reporter, RepresentativeReporter)
    assert reporter.role is None


REPRESENTATIVE = (*CASE, "reporter", "representative")


@pytest.mark.parametrize(("reporter", "where", "error_type"), [
    ({"kind": "representative", "representative": {"name": "Cllr"}}, (*REPRESENTATIVE, "on_behalf_of"), "missing"),
    ({"kind": "representative", "on_behalf_of": {"name": "R"}}, (*REPRESENTATIVE, "representative"), "missing"),
    ({"kind": "representative", "representative": {"name": "Cllr"}, "on_behalf_of": {}},
     (*REPRESENTATIVE, "on_behalf_of"), "value_error"),
    ({"kind": "representative", "representative": {"name": "Cllr"}, "on_behalf_of": {"name": "R"},
      "role": "x" * 101}, (*REPRESENTATIVE, "role"), "string_too_long"),
    ({"kind": "alien"}, (*CASE, "reporter"), "union_tag_invalid"),
    ({"name": "No Kind"}, (*CASE, "reporter"), "union_tag_not_found"),
    ({"kind": "person", "person": {"name": ""}}, (*PERSON, "name"), "string_too_short"),
    ({"kind": "person", "person": {"phone": "call me"}}, (*PERSON, "phone"), "string_pattern_mismatch"),
    ({"kind": "person", "person": {"phone": "12345"}}, (*PERSON, "phone"), "string_pattern_mismatch"),
])
def test_reporter_mistakes_name_the_field(reporter: dict[str, Any], where: Loc, error_type: str) -> None:
    assert the_error_at(case_created(reporter=reporter), where)["type"] == error_type


@pytest.mark.parametrize("email", ["not-an-email", "ada@", "@example.org", "ada example@example.org",
                                   "ada@localhost", "ada@@example.org"])
def test_an_invalid_email_is_refused(email: str) -> None:
    document = case_created(reporter={"kind": "person", "person": {"name": "Ada", "email": email}})
    error = the_error_at(document, (*PERSON, "email"))
    assert error["type"] == "value_error"
    assert "email" in error["msg"]


def test_an_invalid_email_of_a_representative_is_named() -> None:
    document = case_created(reporter={"kind": "representative", "representative": {"email": "nope"},
                                      "on_behalf_of": {"name": "R"}})
    assert error_locations(document) == [(*REPRESENTATIVE, "representative", "email")]


# --- Attachments ------------------------------------------------------------------------------------------------


def test_attachments_carry_url_name_and_type() -> None:
    second = {"url": "https://files.example.org/a/b.pdf?sig=1", "name": "Letter.pdf", "content_type": "application/pdf"}
    event = parse(case_created(attachments=[ATTACHMENT, second]))
    first, other = event.case.attachments
    assert isinstance(first, Attachment)
    assert str(first.url) == ATTACHMENT["url"]
    assert (first.name, first.content_type) == ("pothole.jpg", "image/jpeg")
    assert str(other.url) == second["url"]
    assert json.loads(event.model_dump_json())["case"]["attachments"] == [ATTACHMENT, second]


@pytest.mark.parametrize(("change", "field", "error_type"), [
    ({"url": "not a url"}, "url", "url_parsing"),
    ({"url": ""}, "url", "url_parsing"),
    ({"name": ""}, "name", "string_too_short"),
    ({"name": "x" * 256}, "name", "string_too_long"),
    ({"content_type": "jpeg"}, "content_type", "string_pattern_mismatch"),
    ({"content_type": "image/jpeg; q=1"}, "content_type", "string_pattern_mismatch"),
])
def test_attachment_mistakes_name_the_field(change: dict[str, Any], field: str, error_type: str) -> None:
    document = case_created(attachments=[ATTACHMENT, {**ATTACHMENT, **change}])
    assert the_error_at(document, (*CASE, "attachments", 1, field))["type"] == error_type


@pytest.mark.parametrize("missing", ["url", "name", "content_type"])
def test_every_attachment_field_is_required(missing: str) -> None:
    attachment = {key: value for key, value in ATTACHMENT.items() if key != missing}
    assert the_error_at(case_created(attachments=[attachment]), (*CASE, "attachments", 0, missing))["type"] == "missing"


def test_at_most_fifty_attachments() -> None:
    assert len(parse(case_created(attachments=[ATTACHMENT] * 50)).case.attachments) == 50
    assert the_error_at(case_created(attachments=[ATTACHMENT] * 51), (*CASE, "attachments"))["type"] == "too_long"


# --- Other case fields ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["case_id", "service_code", "channel", "description", "location"])
def test_required_case_fields(missing: str) -> None:
    assert the_error_at(case_without(missing), (*CASE, missing))["type"] == "missing"


@pytest.mark.parametrize("service_code", ["pothole", "Highways.Pothole", "highways.", ".pothole", "highways pothole",
                                          "1highways.pothole", "highways.pothole-deep"])
def test_a_service_code_must_be_dotted_lower_case(service_code: str) -> None:
    assert error_locations(case_created(service_code=service_code)) == [(*CASE, "service_code")]


@pytest.mark.parametrize("service_code", ["highways.pothole", "waste.missed_bin", "env.fly_tipping.large"])
def test_dotted_service_codes_are_accepted(service_code: str) -> None:
    assert parse(case_created(service_code=service_code)).case.service_code == service_code


def test_text_is_stripped_and_blank_text_refused() -> None:
    event = parse(case_created("  CRM-7  ", description="  Broken lamp  "))
    assert event.case.case_id == "CRM-7"
    assert event.case.description == "Broken lamp"
    assert error_locations(case_created("   ")) == [(*CASE, "case_id")]
    assert error_locations(case_created(description="   ")) == [(*CASE, "description")]


def test_status_and_external_refs() -> None:
    event = parse(case_created(status="in_progress", external_refs={"confirm": "ENQ-1234"}))
    assert event.case.status is CaseStatus.in_progress
    assert event.case.external_refs == {"confirm": "ENQ-1234"}
    assert the_error_at(case_created(status="lost"), (*CASE, "status"))["type"] == "enum"
    assert (*CASE, "external_refs", "confirm") in error_locations(case_created(external_refs={"confirm": ""}))


def test_every_mistake_is_reported_at_once() -> None:
    document = case_created()
    document["occurred_at"] = "yesterday"
    document["case"]["channel"] = "pigeon"
    document["case"]["description"] = ""
    document["case"]["location"] = {"lat": 100, "lon": 0}
    assert set(error_locations(document)) == {
        ("case.created", "occurred_at"), (*CASE, "channel"), (*CASE, "description"), (*LOCATION, "lat")}


def test_a_follow_up_event_needs_its_case_reference() -> None:
    document = envelope("case.status_changed", case={}, change={"status": "fixed"})
    assert error_locations(document) == [("case.status_changed", "case", "case_id")]
    document = envelope("case.note_added", case={"case_id": "C-1"}, note={"text": ""})
    assert error_locations(document) == [("case.note_added", "note", "text")]
    document = envelope("case.status_changed", case={"case_id": "C-1"}, change={"status": "done"})
    assert error_locations(document) == [("case.status_changed", "change", "status")]


def test_invalid_json_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event(b"{not json")
    assert caught.value.errors()[0]["type"] == "json_invalid"


# --- JSON Schema ------------------------------------------------------------------------------------------------


def test_the_json_schema_names_every_event_type() -> None:
    schema = EVENT_ADAPTER.json_schema()
    assert schema["discriminator"]["propertyName"] == "event_type"
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == {event_type.value for event_type in EventType}
    assert sorted(item["$ref"] for item in schema["oneOf"]) == sorted(mapping.values())
    for event_type, ref in mapping.items():
        definition = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert definition["properties"]["event_type"]["const"] == event_type
        assert definition["additionalProperties"] is False
        assert {"event_id", "occurred_at", "source"} <= set(definition["required"])
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_json_schema_states_the_location_rule_and_strictness() -> None:
    definitions = EVENT_ADAPTER.json_schema()["$defs"]
    location = definitions["Location"]
    assert {tuple(group["required"]) for group in location["anyOf"]} == {
        ("uprn",), ("usrn",), ("address",), ("postcode",), ("easting", "northing"), ("lat", "lon")}
    assert location["dependentRequired"] == {
        "easting": ["northing"], "northing": ["easting"], "lat": ["lon"], "lon": ["lat"]}
    assert location["additionalProperties"] is False
    assert definitions["Case"]["additionalProperties"] is False
    assert "additionalProperties" not in definitions["Case"]["properties"]["attributes"]
    assert definitions["AnonymousReporter"]["additionalProperties"] is False


@pytest.mark.parametrize(("document", "model"), EVERY_EVENT_TYPE)
def test_the_json_schema_accepts_each_valid_event_and_refuses_a_naive_time(document: dict[str, Any],
                                                                           model: type) -> None:
    validator = jsonschema.Draft202012Validator(EVENT_ADAPTER.json_schema(),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert list(validator.iter_errors(document)) == []
    dumped = json.loads(parse(document).model_dump_json(exclude_none=True))
    assert list(validator.iter_errors(dumped)) == []
    assert not validator.is_valid({**document, "surprise": 1})


def test_events_built_in_python_match_parsed_ones() -> None:
    event_id = uuid.uuid4()
    when = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    built = CaseClosed(event_id=event_id, occurred_at=when, source="crm", case={"case_id": "C-1"})
    parsed = parse({"event_id": str(event_id), "event_type": "case.closed", "occurred_at": when.isoformat(),
                    "source": "crm", "case": {"case_id": "C-1"}})
    assert built == parsed


@pytest.mark.parametrize("status", ["open", "in_progress", "action_scheduled", "investigating"])
def test_a_closed_event_must_carry_a_closing_status(status: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(envelope("case.closed", case={"case_id": "C-1"}, change={"status": status}))
    assert caught.value.errors()[0]["loc"] == ("case.closed", "change")
    assert "send case.status_changed" in caught.value.errors()[0]["msg"]


@pytest.mark.parametrize("status", ["closed", "fixed", "no_further_action", "duplicate",
                                    "not_councils_responsibility"])
def test_a_case_can_close_in_several_ways(status: str) -> None:
    assert parse(envelope("case.closed", case={"case_id": "C-1"}, change={"status": status})).change.status == status
