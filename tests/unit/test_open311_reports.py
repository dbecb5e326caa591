"""An Open311 report as a canonical case: where it is, who sent it, the answers to its form's questions, and what
identifies it when it is sent again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.config.loader import load_configuration
from broker.config.models import ServiceCatalogue
from broker.model.case import AnonymousReporter, IdentifiedReporter
from broker.open311.errors import Open311Error
from broker.open311.reports import ReportForm, report_event

NOW = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
SERVICES = """\
open311:
  attributes:
    - {code: fixmystreet_id, description: Report number, automated: server_set}
services:
  highways.pothole:
    name: Pothole
    attributes:
      - code: sides
        description: Which sides of the road?
        datatype: multivaluelist
        values: {north: North, south: South, east: East}
      - {code: size, description: "How big?", datatype: number, required: true}
      - {code: seen, description: "When?", datatype: datetime}
"""
ROUTES = """\
targets:
  crm: {adapter: webhook, system: crm, settings: {url: "http://127.0.0.1:9/crm"}}
routes:
  - {name: all, services: ["*"], deliver: [{target: crm}]}
"""


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> ServiceCatalogue:
    folder: Path = tmp_path_factory.mktemp("mappings")
    (folder / "services.yaml").write_text(SERVICES)
    (folder / "routes.yaml").write_text(ROUTES)
    return load_configuration(folder).catalogue


def form(*items: tuple[str, str], **fields: str) -> ReportForm:
    values = {"service_code": "highways.pothole", "description": "A hole", "address_string": "12 High Street",
              **fields}
    return ReportForm(**{name: value or None for name, value in values.items()},  # empty is absent, as the app reads
                      items=[("service_code", "highways.pothole"), ("attribute[size]", "3"), *items])


def test_a_multivaluelist_takes_values_repeated_with_brackets_or_comma_separated(catalogue: ServiceCatalogue) -> None:
    for items in ([("attribute[sides][]", "north"), ("attribute[sides][]", "east")],
                  [("attribute[sides]", "north"), ("attribute[sides]", "east")],
                  [("attribute[sides]", "north,east")]):
        event = report_event(catalogue, "portal", form(*items), NOW)
        assert event.case.attributes["sides"] == ["north", "east"]
    with pytest.raises(Open311Error) as refused:
        report_event(catalogue, "portal", form(("attribute[sides][]", "west")), NOW)
    assert refused.value.errors == [(400, "attribute[sides]: not among its values (north, south, east)")]


def test_answers_take_their_datatype_and_a_required_one_must_be_there(catalogue: ServiceCatalogue) -> None:
    event = report_event(catalogue, "portal", form(("attribute[seen]", "2026-11-19"), ("attribute[size]", "")), NOW)
    assert event.case.attributes == {"size": 3, "seen": "2026-11-19"}
    missing = ReportForm(service_code="highways.pothole", description="A hole", address_string="High Street",
                         items=[])
    with pytest.raises(Open311Error) as refused:
        report_event(catalogue, "portal", missing, NOW)
    assert refused.value.errors == [(400, "attribute[size]: required: How big?")]


def test_where_it_is_an_address_a_uprn_or_a_point(catalogue: ServiceCatalogue) -> None:
    by_address = report_event(catalogue, "portal", form(), NOW).case.location
    assert (by_address.address, by_address.lat) == ("12 High Street", None)
    by_uprn = report_event(catalogue, "portal", form(address_string="", address_id="100023336956"), NOW)
    assert by_uprn.case.location.uprn == "100023336956"
    assert by_uprn.case.attributes["address_id"] == "100023336956"
    unpinned = report_event(catalogue, "portal", form(address_string="", address_id="#NOTPINPOINTED#"), NOW)
    assert unpinned.case.location.address == "#NOTPINPOINTED#"


def test_who_reported_it_or_nobody(catalogue: ServiceCatalogue) -> None:
    anonymous = report_event(catalogue, "portal", form(), NOW).case.reporter
    assert isinstance(anonymous, AnonymousReporter)
    named = report_event(catalogue, "portal", form(first_name="Ada", last_name="-", phone="01632 960000"),
                         NOW).case.reporter
    assert isinstance(named, IdentifiedReporter)
    assert (named.person.name, named.person.phone, named.person.email) == ("Ada", "01632 960000", None)


def test_a_report_is_identified_by_its_number_or_by_all_it_says_in_any_order(catalogue: ServiceCatalogue) -> None:
    numbered = report_event(catalogue, "fixmystreet", form(("attribute[fixmystreet_id]", "12/34")), NOW)
    assert numbered.case.case_id == "12~2F34"  # a number holding a slash is still a case id
    again = report_event(catalogue, "fixmystreet", form(("attribute[fixmystreet_id]", "12/34"),
                                                        description="Reworded"), NOW)
    assert again.event_id == numbered.event_id
    other_sender = report_event(catalogue, "another", form(("attribute[fixmystreet_id]", "12/34")), NOW)
    assert other_sender.event_id != numbered.event_id
    plain = ReportForm(service_code="highways.pothole", description="A hole", address_string="12 High Street",
                       items=[("description", "A hole"), ("attribute[size]", "3"), ("api_key", "one")])
    shuffled = ReportForm(service_code="highways.pothole", description="A hole", address_string="12 High Street",
                          items=[("api_key", "another"), ("attribute[size]", "3"), ("description", "A hole")])
    assert report_event(catalogue, "portal", plain, NOW).case.case_id == \
        report_event(catalogue, "portal", shuffled, NOW).case.case_id
