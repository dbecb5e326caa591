"""The service catalogue says what an Open311 client shows residents: each service's group and keywords, and the
questions its form asks (attributes), with the ones FixMyStreet fills itself marked ``automated``. ``broker check``
reports a mistake in them with file and line, as it does for the rest of the mappings."""

from __future__ import annotations

from pathlib import Path

from support.harness import REPO

from broker.config.check import check_all
from broker.config.loader import load_configuration
from broker.config.models import AttributeDatatype, Automated
from broker.open311.catalogue import attributes_of

ROUTES = """\
targets:
  crm:
    adapter: webhook
    system: crm
    settings:
      url: http://127.0.0.1:9/crm
routes:
  - name: everything to the CRM
    services: ["*"]
    deliver:
      - target: crm
"""


def mappings_with(tmp_path: Path, services: str) -> Path:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "services.yaml").write_text(services)
    (mappings / "routes.yaml").write_text(ROUTES)
    return mappings


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip() == text)


def test_the_shipped_catalogue_declares_groups_keywords_and_the_questions_of_each_form() -> None:
    catalogue = load_configuration(REPO / "mappings").catalogue
    pothole = catalogue.services["highways.pothole"]
    assert pothole.group and pothole.keywords
    by_code = {attribute.code: attribute for attribute in attributes_of(catalogue, "highways.pothole")}
    assert by_code["hazard"].datatype is AttributeDatatype.singlevaluelist and by_code["hazard"].values
    # FixMyStreet fills these itself, for every service, and they come first.
    filled = ["fixmystreet_id", "easting", "northing", "closest_address", "uprn"]
    assert [attribute.code for attribute in attributes_of(catalogue, "waste.missed_bin")][:5] == filled
    assert {by_code[code].automated for code in filled} <= {Automated.server_set, Automated.hidden_field}
    assert catalogue.open311.jurisdiction_id


def test_a_service_may_redeclare_a_shared_attribute_in_its_place(tmp_path: Path) -> None:
    mappings = mappings_with(tmp_path, """\
open311:
  attributes:
    - {code: fixmystreet_id, description: FixMyStreet's number, automated: server_set}
    - {code: uprn, description: Property, automated: hidden_field}
services:
  environment.noise:
    name: Noise
    attributes:
      - {code: source, description: "Where is the noise from?"}
      - {code: uprn, description: The property the noise comes from, required: true, automated: hidden_field}
""")
    catalogue = load_configuration(mappings).catalogue
    attributes = attributes_of(catalogue, "environment.noise")
    assert [(a.code, a.required) for a in attributes] == [("fixmystreet_id", False), ("uprn", True), ("source", False)]


def test_files_without_open311_fields_are_still_valid(tmp_path: Path) -> None:
    mappings = mappings_with(tmp_path, "services:\n  highways.pothole:\n    name: Pothole\n")
    catalogue = load_configuration(mappings).catalogue
    assert attributes_of(catalogue, "highways.pothole") == []
    assert catalogue.open311.jurisdiction_id is None


def test_check_names_file_and_line_of_each_mistake_in_an_attribute(tmp_path: Path) -> None:
    services = """\
services:
  highways.pothole:
    name: Pothole
    attributes:
      - code: hazard
        description: Who is at risk?
        datatype: singlevaluelist
      - code: depth
        description: How deep?
        datatype: number
        values: {deep: Deep}
      - code: "not a code!"
        description: Bad
        datatype: colour
        automated: always
  environment.noise:
    name: Noise
    attributes:
      - {code: source, description: Source}
      - {code: source, description: Again}
"""
    mappings = mappings_with(tmp_path, services)
    problems = [str(problem) for problem in check_all(mappings, REPO / "schedules")]
    file = mappings / "services.yaml"

    def said(text: str, line_text: str, *, lines_above: int = 0) -> bool:
        line = line_of(file, line_text) - lines_above
        return any(f"{file}:{line}:" in problem and text in problem for problem in problems)

    assert said("a singlevaluelist needs values", "- code: hazard"), problems
    assert said("values are only for singlevaluelist and multivaluelist", "- code: depth"), problems
    assert said("attribute codes must be unique: source", "- {code: source, description: Source}",
                lines_above=1), problems  # the noise service's "attributes:"
    assert said("attributes.2.code", '- code: "not a code!"'), problems
    assert said("attributes.2.datatype", "datatype: colour"), problems
    assert said("attributes.2.automated", "automated: always"), problems
