"""Bounded property-based fuzzing of what Casebridge reads from outside: the intake's JSON envelope (parsed, and
posted to a live broker), the SOAP answers of Confirm and Uniform, and the CSV files a batch import takes in.

Each may refuse what it is given, but only with the exception it documents (or, over HTTP, a 4xx): never another
exception type, never a 5xx.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from pydantic import ValidationError
from support.envelopes import case_created, note_added, status_changed
from support.harness import RunningBroker, write_mappings
from support.receiver import WebhookReceiver

from adapters.common.soap import MalformedXml, SoapFault, UnsafeXml, body_content, parse_xml, raise_for_fault
from adapters.confirm.soap import RequestFault, operation_results
from adapters.uniform.soap import result as uniform_result
from broker.batch.config import ImportFormat
from broker.batch.csv_import import CsvRows, parse_date
from broker.batch.errors import BatchError, RowError
from broker.model.events import parse_event
from broker.settings import Settings

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# --- the intake's JSON -------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\x00", "/", "?", "#", "%", "\\", "\n", "\u2028"]),
               max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12,
)
VALID = [case_created("FUZZ-1"), note_added("FUZZ-1"), status_changed("FUZZ-1", "fixed")]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


SPECIAL = ["\x00", "/", "?", "#", "%", "\\", "[/bold]", "\ud800", "\u202e", "'", '"', "<script>"]


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A valid envelope with one to three of its values (or the whole of it) replaced by arbitrary JSON, or with
    an awkward character put into one of its texts."""
    document = copy.deepcopy(draw(st.sampled_from(VALID)))
    document["event_id"] = str(draw(st.uuids()))  # each example a new event, not a replay of the first
    if "case_id" in document["case"] and document["event_type"] == "case.created":
        document["case"]["case_id"] = f"FUZZ-{draw(st.integers(2, 10**6))}"
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(document))))
        if not path:
            return json.dumps(draw(JSON)).encode()
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        value = parent[path[-1]]
        if isinstance(value, str) and draw(st.booleans()):
            at = draw(st.integers(0, len(value)))
            parent[path[-1]] = value[:at] + draw(st.sampled_from(SPECIAL)) + value[at:]
        else:
            parent[path[-1]] = draw(JSON)
    return json.dumps(document).encode()


@BOUNDED
@given(body=envelopes() | st.binary(max_size=200))
def test_the_envelope_parser_refuses_only_with_a_validation_error(body: bytes) -> None:
    with contextlib.suppress(ValidationError):
        parse_event(body)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    folder = tmp_path_factory.mktemp("fuzz-intake")
    (folder / "schedules").mkdir()
    receiver = WebhookReceiver()
    running = RunningBroker(Settings(
        database_url=f"sqlite:///{folder / 'fuzz.db'}", amqp_url="memory://", amqp_namespace="fuzz-intake",
        mappings_dir=write_mappings(folder / "mappings", receiver.url), schedules_dir=folder / "schedules",
    ))
    yield running
    running.stop()
    receiver.close()


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=envelopes())
def test_an_arbitrary_envelope_posted_is_accepted_or_refused_never_a_server_error(live: RunningBroker,
                                                                                  body: bytes) -> None:
    for path in ("/v1/cases", "/v1/cases/FUZZ-1/events"):
        response = live.client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code < 500, (response.status_code, response.text)
        try:
            response.json()
        except ValueError:
            pytest.fail(f"not JSON: {response.text[:200]!r}")


# --- SOAP answers --------------------------------------------------------------------------------------------------

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
CONFIRM = "http://www.confirm.co.uk/schema/am/connector/webservice"
TAGS = ["Response", "OperationResponse", "Fault", "Reason", "NewEnquiryResponse", "Enquiry", "EnquiryNumber",
        "SubmitGeneralServiceRequestResult", "TransactionSuccess", "ReferenceValue", "faultstring", "faultcode",
        "x", f"{{{CONFIRM}}}ProcessOperationsResult", f"{{{SOAP}}}Fault"]
XML_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(
    lambda c: c in "\t\n\r" or (ord(c) >= 0x20 and c not in "\ufffe\uffff")), max_size=20)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    element = etree.Element(draw(st.sampled_from(TAGS)))
    element.text = draw(st.none() | XML_TEXT)
    if depth < 4:
        for _ in range(draw(st.integers(0, 3))):
            element.append(draw(elements(depth + 1)))
    return element


@st.composite
def soap_answers(draw: st.DrawFn) -> bytes:
    root = etree.Element(f"{{{SOAP}}}Envelope")
    body = etree.SubElement(root, f"{{{SOAP}}}Body") if draw(st.booleans()) else root
    for _ in range(draw(st.integers(0, 2))):
        body.append(draw(elements()))
    data = etree.tostring(root, xml_declaration=draw(st.booleans()), encoding="utf-8")
    if draw(st.booleans()):  # then break it somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"", b"<", b"&", b"<!DOCTYPE x>", b"<!ENTITY a 'b'>", b"\x00",
                                                  b"\xff", b"]]>"])) + data[at + draw(st.integers(0, 5)):]
    return bytes(data)


@BOUNDED
@given(data=soap_answers() | st.binary(max_size=300))
def test_a_soap_answer_is_read_or_refused_with_a_documented_error(data: bytes) -> None:
    try:
        root = parse_xml(data)
        raise_for_fault(root)
        body_content(root)
        for _ in operation_results(root):
            pass
        uniform_result(root, "SubmitGeneralServiceRequest")
    except (UnsafeXml, MalformedXml, SoapFault, RequestFault):
        pass


# --- CSV import ----------------------------------------------------------------------------------------------------

FORMAT = ImportFormat.model_validate({"encoding": "auto", "columns": {"case_id": "Ref", "status": "Stage",
                                                                      "occurred_at": "Date", "notes": "Notes"}})
CELL = st.text(st.sampled_from(['a', 'Z', '9', ' ', ',', ';', '"', '\r', '\n', '\x00', '°', '/', ':', 'é', '\t']),
               max_size=12) | st.sampled_from(["01/11/2026 08:30", "31/02/2026 08:30", "1/1/1 0:0", "99/99/9999"])


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from(["Ref,Stage,Date,Notes", "Ref,Stage,Date", "", "Ref,Ref,Stage,Date,Notes"]))
    rows = [",".join(draw(st.lists(CELL, min_size=0, max_size=6))) for _ in range(draw(st.integers(0, 6)))]
    text = "\r\n".join([header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "cp1252", "utf-8-sig"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff\xfe", b"\x81", b'"', b"\x00"])) + data[at:]
    return data


@BOUNDED
@given(data=csv_files())
def test_a_csv_file_yields_rows_or_row_errors_never_another_exception(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "CSVEXP_01112026_0830.CSV"
        path.write_bytes(data)
        try:
            rows = CsvRows(path, FORMAT)
        except BatchError:
            return
        with rows:
            for row in rows:
                assert row.line >= 2
                if row.error is None:
                    with contextlib.suppress(RowError):
                        parse_date(row.values["Date"], FORMAT)
