"""Open311's wire: both formats built from one description, datetimes with their offset, statuses mapped both ways in
one place, and the schemas the tests check every answer against -- shown to fail on a missing field, a wrong type and
a datetime without its offset."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree
from support.fixmystreet import simple_xml
from support.harness import REPO
from support.open311_schemas import check_json, check_xml

from broker.config.loader import load_configuration
from broker.model.case import CaseStatus
from broker.open311.body import parameter_being_read, utf8_problem
from broker.open311.catalogue import service_definition, service_list
from broker.open311.statuses import after_resident_update, read_sent, spec_status, update_status
from broker.open311.wire import json_document, parse_w3c, w3c, xml_document

CATALOGUE = load_configuration(REPO / "mappings").catalogue
WHEN = datetime(2026, 11, 20, 9, 15, 0, 250_000, tzinfo=UTC)
UPDATE = {"update_id": "u-1", "service_request_id": "CB-1", "status": "FIXED", "updated_datetime": WHEN,
          "description": "Filled", "media_url": "", "external_status_code": "4000"}


def test_xml_has_its_declaration_no_namespace_and_the_lists_wrapped_as_the_spec_shows() -> None:
    body = xml_document("service_definition", service_definition(CATALOGUE, "highways.pothole"))
    assert body.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = check_xml("service_definition", body)
    assert root.nsmap == {}
    hazard = next(a for a in root.iter("attribute") if a.findtext("code") == "hazard")
    assert [value.findtext("key") for value in hazard.iter("value")] == ["cyclists", "pedestrians", "vehicles"]
    assert [a.findtext("order") for a in root.iter("attribute")] == [str(n) for n in range(1, 9)]


def test_json_is_the_spark_mapping_a_bare_array_and_null_for_empty() -> None:
    services = json.loads(json_document(service_list(CATALOGUE)))
    check_json("services", services)
    assert isinstance(services, list) and services[0]["metadata"] is True
    updates = json.loads(json_document([UPDATE | {"media_url": ""}]))
    assert updates[0]["media_url"] is None and updates[0]["updated_datetime"] == "2026-11-20T09:15:00+00:00"


def test_text_xml_cannot_carry_is_left_out_rather_than_failing() -> None:
    body = xml_document("service_request_updates", [UPDATE | {"description": "bell\x07 and \x0bvertical tab"}])
    assert etree.fromstring(body).findtext("request_update/description") == "bell and vertical tab"


def test_datetimes_go_out_in_whole_seconds_with_their_offset() -> None:
    assert w3c(WHEN) == "2026-11-20T09:15:00+00:00"
    assert w3c(datetime(2026, 7, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-07-01T09:00:00+00:00"


@pytest.mark.parametrize("text", ["2026-11-20T09:15:00Z", "2026-11-20T09:15:00+00:00", "2026-11-20T10:15:00+01:00",
                                  "2026-11-20T10:15:00+0100", "2026-11-20T10:15:00 01:00",
                                  "2026-11-20T09:15:00.000Z", "2026-11-20T09:15Z"])
def test_datetimes_come_in_as_the_w3c_profile_with_a_zone(text: str) -> None:
    assert parse_w3c(text) == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-11-20T09:15:00", "2026-11-20", "20/11/2026 09:15", "2026-13-40T09:15:00Z",
                                  "yesterday", "2026-11-20T09:15:00+25:00"])
def test_a_datetime_without_its_zone_or_not_a_date_is_refused_saying_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_w3c(text)
    assert "W3C" in str(refused.value) or "not a real date" in str(refused.value)


def test_statuses_both_ways() -> None:
    assert [spec_status(status) for status in (CaseStatus.open, CaseStatus.in_progress, CaseStatus.fixed,
                                               CaseStatus.internal_referral, CaseStatus.duplicate)] == \
        ["open", "open", "closed", "closed", "closed"]
    assert update_status(CaseStatus.not_councils_responsibility) == "NOT_COUNCILS_RESPONSIBILITY"
    assert all(read_sent(update_status(status)) == (True, status) for status in CaseStatus)
    assert read_sent("not councils responsibility") == (True, CaseStatus.not_councils_responsibility)
    assert read_sent("SOMETHING") == (False, None)


@pytest.mark.parametrize(("sent", "current", "after"), [
    ("OPEN", CaseStatus.investigating, None),       # a client without extended statuses: still open, as it was
    ("CLOSED", CaseStatus.fixed, None),
    ("CLOSED", CaseStatus.in_progress, CaseStatus.closed),
    ("OPEN", CaseStatus.fixed, CaseStatus.open),      # reopened
    ("REOPEN", CaseStatus.no_further_action, CaseStatus.open),
    ("REOPEN", CaseStatus.open, None),
    ("FIXED", CaseStatus.action_scheduled, CaseStatus.fixed),
    ("ACTION_SCHEDULED", CaseStatus.action_scheduled, None),
    ("UNCHANGED", CaseStatus.fixed, None),
])
def test_what_a_residents_update_does_to_the_status(sent: str, current: CaseStatus, after: CaseStatus | None) -> None:
    assert after_resident_update(sent, current) == after


def test_the_xml_schemas_fail_a_missing_field_a_wrong_type_and_a_datetime_without_offset() -> None:
    good = xml_document("service_request_updates", [UPDATE])
    check_xml("updates", good)
    for doctor in (lambda root: root.find("request_update").remove(root.find("request_update/update_id")),
                   lambda root: setattr(root.find("request_update/status"), "text", "fixed - council"),
                   lambda root: setattr(root.find("request_update/updated_datetime"), "text", "2026-11-20T09:15:00")):
        root = etree.fromstring(good)
        doctor(root)
        with pytest.raises(AssertionError):
            check_xml("updates", etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    definition = etree.fromstring(xml_document("service_definition", service_definition(CATALOGUE, "highways.pothole")))
    definition.find("attributes/attribute/required").text = "yes"
    with pytest.raises(AssertionError):
        check_xml("service_definition", etree.tostring(definition, xml_declaration=True, encoding="UTF-8"))


def test_the_json_schemas_fail_a_missing_field_a_wrong_type_and_a_datetime_without_offset() -> None:
    good = json.loads(json_document([UPDATE]))
    check_json("updates", good)
    for key, value in (("update_id", None), ("status", "fixed"), ("updated_datetime", "2026-11-20 09:15:00")):
        bad = copy.deepcopy(good)
        if value is None:
            del bad[0][key]
        else:
            bad[0][key] = value
        with pytest.raises(AssertionError):
            check_json("updates", bad)
    services = json.loads(json_document(service_list(CATALOGUE)))
    services[0]["metadata"] = "true"
    with pytest.raises(AssertionError):
        check_json("services", services)


def test_fixmystreets_reading_forces_the_lists_and_folds_their_wrappers() -> None:
    read = simple_xml(xml_document("service_definition", service_definition(CATALOGUE, "waste.missed_bin")))
    assert isinstance(read["attributes"], list) and read["attributes"][0]["code"] == "fixmystreet_id"
    assert read["attributes"][0]["datatype_description"] is None
    one = simple_xml(xml_document("service_requests", [{"service_request_id": "CB-1"}]))
    assert one == {"request": [{"service_request_id": "CB-1"}]}
    assert simple_xml(xml_document("service_request_updates", [])) is None


def test_the_parameter_a_body_was_cut_short_in_is_named() -> None:
    assert parameter_being_read(b"api_key=x&service_code=a.b&description=aaaaaaa") == "description"
    assert parameter_being_read(b"api_key=x&attribute%5Bhazard%5D=aaaa") == "attribute[hazard]"
    assert parameter_being_read(b'--b\r\nContent-Disposition: form-data; name="photo1"; filename="a"\r\n\r\n\xff') \
        == "photo1"
    assert parameter_being_read(b"") is None


def test_a_form_that_is_not_percent_encoded_utf8_is_named() -> None:
    assert utf8_problem(b"description=caf%C3%A9&email=a%40b.example") == ""
    assert utf8_problem(b"description=caf%E9").startswith("description: is not UTF-8")
    assert utf8_problem("description=café".encode()).startswith("description: holds bytes")
