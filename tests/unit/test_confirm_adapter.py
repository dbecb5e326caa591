"""The Confirm adapter against the Confirm simulator, in its lenient and its strict profile: what it sends, and how
it reads every kind of answer."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from lxml import etree
from support.envelopes import case_created, envelope, note_added, status_changed
from support.soap_targets import (
    CONFIRM,
    Reply,
    answering,
    assert_unmapped_service_is_refused,
    never_claims_absent,
    timed_out_then_found,
)

from adapters.common.soap_server import PROFILES
from adapters.confirm.adapter import ConfirmAdapter
from adapters.confirm.simulator import ConfirmSimulator
from adapters.confirm.soap import CONFIRM_NS, response_envelope, sub
from broker.errors import DeliveryUnconfirmed, PermanentDeliveryError, TransientDeliveryError
from broker.model import CaseStatus

adapter_for = CONFIRM.adapter
request = CONFIRM.request


@pytest.fixture(params=[(profile, faults) for profile in PROFILES for faults in ("operation", "request")],
                ids=lambda param: f"{param[0]}-faults-per-{param[1]}")
def simulator(request: pytest.FixtureRequest) -> Iterator[ConfirmSimulator]:
    """Every test runs against both profiles, and Confirm answers a lone operation's fault in either place."""
    profile, faults = request.param
    yield from CONFIRM.simulated(profile=profile, request_level_faults=faults == "request")


@pytest.fixture
def confirm(simulator: ConfirmSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConfirmAdapter]:
    yield from CONFIRM.connected(simulator, monkeypatch)


def test_an_anonymous_pothole_becomes_an_enquiry(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    document = case_created("C-1", reporter={"kind": "anonymous"}, attributes={"depth_mm": 80, "colour": "grey"})
    document["occurred_at"] = "2026-07-01T09:15:00+00:00"  # British Summer Time: 10:15 in London
    outcome = confirm.deliver(request(document))

    enquiry = simulator.enquiries[outcome.external_ref or ""]
    assert (enquiry.service, enquiry.subject) == ("HW", "POT")
    assert enquiry.fields["LoggedTime"] == "2026-07-01T10:15:00"
    assert enquiry.fields["ExternalSystemReference"] == "CB-0001"
    assert enquiry.fields["ExternalSystemNumber"] == "CASEBRIDGE"
    assert (enquiry.fields["EnquiryX"], enquiry.fields["EnquiryY"]) == ("530000.00", "180000.00")
    assert enquiry.customer == {}  # anonymous: no customer is sent
    assert "ContactName" not in enquiry.fields
    assert enquiry.attributes == [("DEPT", "80")]  # the unmapped answer stays with us


def test_a_representative_reports_for_a_resident(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    reporter = {"kind": "representative", "role": "councillor",
                "representative": {"name": "Councillor Jane Smith-Worthington of the Riverside Ward",
                                   "email": "cllr.smith@example.gov.uk"},
                "on_behalf_of": {"name": "Alan Resident", "phone": "+44 (0) 20 7946 0000 123"}}
    outcome = confirm.deliver(request(case_created("C-2", reporter=reporter, channel="phone")))
    enquiry = simulator.enquiries[outcome.external_ref or ""]
    assert enquiry.fields["ContactName"] == "Councillor Jane Smith-Worthington of the Riverside"[:50]
    assert len(enquiry.fields["ContactName"]) == 50
    assert enquiry.customer["CustomerForename"] == "Alan" and enquiry.customer["CustomerSurname"] == "Resident"
    assert len(enquiry.customer["CustomerPhone"]) <= 20
    assert enquiry.customer["EnquiryMethodCode"] == "TEL"
    assert enquiry.customer["CustomerTypeCode"] == "PUB"


def test_lat_lon_only_is_converted_to_british_national_grid(confirm: ConfirmAdapter,
                                                            simulator: ConfirmSimulator) -> None:
    # Nelson's Column, Trafalgar Square: about E 530000, N 180400 on the British National Grid.
    outcome = confirm.deliver(request(case_created("C-3", location={"lat": 51.507748, "lon": -0.127969})))
    enquiry = simulator.enquiries[outcome.external_ref or ""]
    assert abs(float(enquiry.fields["EnquiryX"]) - 530000) < 150
    assert abs(float(enquiry.fields["EnquiryY"]) - 180400) < 150


def test_long_descriptions_are_cut_to_2000_characters(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    outcome = confirm.deliver(request(case_created("C-4", description="x" * 2500)))
    assert len(simulator.enquiries[outcome.external_ref or ""].fields["EnquiryDescription"]) == 2000
    assert outcome.detail["description_truncated_from"] == 2500


def test_attributes_use_the_value_element_of_their_type(confirm: ConfirmAdapter,
                                                        simulator: ConfirmSimulator) -> None:
    outcome = confirm.deliver(request(case_created(
        "C-5", attributes={"depth_mm": 120, "hazard": "cyclists", "first_noticed": "2026-11-20", "blank": ""})))
    assert simulator.enquiries[outcome.external_ref or ""].attributes == [
        ("DEPT", "120"), ("HAZD", "CYC"), ("SEEN", "2026-11-20")]


def test_attachments_become_enquiry_documents(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    attachment = {"url": "https://example.org/p.jpg", "name": "photo.jpg", "content_type": "image/jpeg"}
    outcome = confirm.deliver(request(case_created("C-6", attachments=[attachment])))
    assert simulator.enquiries[outcome.external_ref or ""].documents == [
        {"DocumentNotes": "photo.jpg", "DocumentLocation": "https://example.org/p.jpg"}]


def test_an_unmapped_service_fails_permanently_before_calling(confirm: ConfirmAdapter,
                                                              simulator: ConfirmSimulator) -> None:
    unicorn = case_created("C-7", service_code="highways.unicorn")
    assert_unmapped_service_is_refused(confirm, request(unicorn), "highways.unicorn")
    assert simulator.requests == []


def test_wrong_credentials_are_permanent_and_say_so(simulator: ConfirmSimulator,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    CONFIRM.assert_wrong_password_is_refused(simulator.url, monkeypatch, request(case_created("C-8")))
    assert simulator.enquiries == {}


def test_a_code_confirm_does_not_know_is_permanent_with_its_words(confirm: ConfirmAdapter,
                                                                  simulator: ConfirmSimulator) -> None:
    del simulator.services["SL"]
    with pytest.raises(PermanentDeliveryError) as caught:
        confirm.deliver(request(case_created("C-9", service_code="highways.street_light")))
    assert caught.value.reason == "confirm_fault"
    assert "Service Code 'SL'" in caught.value.message


def test_updates_notes_and_status_changes(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    created = case_created("C-10")
    created["occurred_at"] = "2026-11-23T09:00:00+00:00"
    number = confirm.deliver(request(created)).external_ref
    changed = status_changed("C-10", "in_progress")
    changed["occurred_at"] = "2026-11-23T09:05:00+00:00"
    confirm.deliver(request(changed, external_ref=number))
    noted = note_added("C-10", "Resident says it is getting deeper")
    noted["occurred_at"] = "2026-11-23T09:10:00+00:00"
    confirm.deliver(request(noted, external_ref=number))
    log = simulator.enquiries[number or ""].log
    assert [(entry.status, entry.notes) for entry in log[1:]] == [
        ("2000", "case.status_changed from crm"), ("2000", "Resident says it is getting deeper")]


def test_a_stale_update_is_resubmitted_without_time_and_status(confirm: ConfirmAdapter,
                                                               simulator: ConfirmSimulator) -> None:
    number = confirm.deliver(request(case_created("C-11"))).external_ref or ""
    simulator.officer_sets_status(number, "3000", "Works ordered")  # newer than the update below
    stale = status_changed("C-11", "in_progress")
    stale["occurred_at"] = "2020-01-01T09:00:00+00:00"
    stale["change"]["reason"] = "Resident chased"
    outcome = confirm.deliver(request(stale, external_ref=number))
    assert outcome.detail["resubmitted_without_time_and_status"] is True
    last = simulator.enquiries[number].log[-1]
    assert (last.status, last.notes) == ("3000", "Resident chased")  # Confirm's newer status stands
    assert simulator.requests[-2:] == [["EnquiryUpdate"], ["EnquiryUpdate"]]


def test_an_update_without_an_enquiry_is_permanent(confirm: ConfirmAdapter) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        confirm.deliver(request(status_changed("C-12", "fixed")))
    assert caught.value.reason == "no_enquiry"


@pytest.mark.parametrize("reference_element", ["ExternalSystemReference", "EnquiryReference"])
def test_slow_confirm_then_success_creates_one_enquiry(reference_element: str, simulator: ConfirmSimulator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = adapter_for(simulator.url, monkeypatch, timeout_seconds=0.5, reference_element=reference_element)
    found = timed_out_then_found(adapter, simulator, request(case_created("C-13"), our_reference="CB-SLOW"))
    [enquiry] = simulator.by_reference("CB-SLOW")
    assert enquiry.fields[reference_element] == "CB-SLOW"
    assert found.external_ref == enquiry.number
    assert found.detail["found_by_reference"] is True
    # A case never sent is not "not there": Confirm has no look-up by our reference that could prove it.
    assert isinstance(never_claims_absent(adapter, request(case_created("C-14"), our_reference="CB-NEVER")),
                      DeliveryUnconfirmed)


def test_get_enquiry_goes_ten_at_a_time_and_tolerates_one_fault(confirm: ConfirmAdapter,
                                                                simulator: ConfirmSimulator) -> None:
    numbers = [confirm.deliver(request(case_created(f"B-{n}"))).external_ref or "" for n in range(22)]
    simulator.requests.clear()
    found = confirm.get_enquiries([*numbers, "999999"])
    assert [len(operations) for operations in simulator.requests] == [10, 10, 3]
    assert isinstance(found["999999"], str) and "does not exist" in found["999999"]
    assert all(not isinstance(found[number], str) for number in numbers)


def test_lookups_list_services_and_statuses(confirm: ConfirmAdapter) -> None:
    lookups = confirm.lookups()
    assert "POT" in lookups.xpath("TypeOfService/EnquirySubject/SubjectCode/text()")
    assert "4000" in lookups.xpath("EnquiryStatus/EnqStatusCode/text()")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><Response>&lol3;</Response>
</soap:Body></soap:Envelope>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><Response>
<OperationResponse><NewEnquiryResponse><Enquiry><EnquiryNumber>&xxe;</EnquiryNumber></Enquiry>
</NewEnquiryResponse></OperationResponse></Response></soap:Body></soap:Envelope>"""


@contextmanager
def canned_confirm(answer: bytes, status: int = 200, content_type: str = "text/xml") -> Iterator[str]:
    """A server that gives every request the same answer: for answers the simulator would never give."""
    with answering(lambda _body: (status, answer, {"Content-Type": content_type})) as url:
        yield url


@contextmanager
def recording_confirm(simulator: ConfirmSimulator, sent: list[etree._Element]) -> Iterator[str]:
    """The simulator behind a server that keeps every operation sent, for what the simulator does not store."""
    def answer(body: bytes) -> Reply:
        sent.extend(operation for wrapper in etree.fromstring(body).iter("Operation") for operation in wrapper)
        return 200, simulator.handle(body), {"Content-Type": "text/xml"}

    with answering(answer) as url:
        yield url


@pytest.mark.parametrize("answer", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "xxe"])
def test_a_malicious_answer_is_refused_unread(answer: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with canned_confirm(answer) as url:
        adapter = adapter_for(url, monkeypatch)
        with pytest.raises(PermanentDeliveryError) as caught:
            adapter.deliver(request(case_created("EVIL-1")))
        assert caught.value.reason == "unsafe_xml"


def test_http_401_is_a_permanent_credentials_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    with canned_confirm(b"Unauthorized", status=401, content_type="text/plain") as url:
        with pytest.raises(PermanentDeliveryError) as caught:
            adapter_for(url, monkeypatch).deliver(request(case_created("AUTH-1")))
        assert caught.value.reason == "confirm_authentication"


@pytest.mark.parametrize(("reason", "permanent"), [
    ("Validate enquiry.1001.Service Code 'HW' / Subject Code 'XX' is not valid", True),
    ("Server was unable to process request. Database connection lost", False),
])
def test_a_soap_fault_is_permanent_only_when_it_refuses_the_data(reason: str, permanent: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.confirm.soap import soap_fault

    with canned_confirm(soap_fault(reason), status=500) as url:
        with pytest.raises(PermanentDeliveryError if permanent else TransientDeliveryError) as caught:
            adapter_for(url, monkeypatch).deliver(request(case_created("SOAP-1")))
        assert reason in caught.value.message


def test_a_lookup_that_fails_for_another_reason_is_asked_again_not_created(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.confirm.soap import response_envelope

    refused = etree.Element("Response")
    etree.SubElement(etree.SubElement(refused, "Fault"), "Reason").text = "Timeout expired while reading enquiries"
    with canned_confirm(response_envelope(refused)) as url:
        with pytest.raises(TransientDeliveryError) as caught:
            adapter_for(url, monkeypatch).find_delivered(request(case_created("LOOK-1")))
        assert caught.value.reason == "confirm_lookup_failed"


def test_the_request_is_soap_1_1_with_authentication(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    from adapters.confirm.soap import CONFIRM_NS, request_envelope

    body = request_envelope("u", "p&<", "DB", [etree.Element("GetEnquiryLookups")])
    root = etree.fromstring(body)
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    assert root.xpath("//web:ProcessOperationsRequest/Request/Authentication/Password/text()",
                      namespaces={"web": CONFIRM_NS}) == ["p&<"]
    assert root.xpath("//Request/Operation/GetEnquiryLookups", namespaces={}) != []



def test_a_case_update_moves_the_enquiry_to_the_mapped_service(simulator: ConfirmSimulator,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    created = case_created("C-20")
    created["occurred_at"] = "2026-11-23T09:00:00+00:00"
    updated = envelope("case.updated", case={**created["case"], "service_code": "highways.street_light",
                                             "description": "Not a pothole: the street light is out"})
    updated["occurred_at"] = "2026-11-23T09:05:00+00:00"
    sent: list[etree._Element] = []
    with recording_confirm(simulator, sent) as url:
        adapter = adapter_for(url, monkeypatch)
        number = adapter.deliver(request(created)).external_ref or ""
        outcome = adapter.deliver(request(updated, external_ref=number))

    update = sent[-1]
    assert update.tag == "EnquiryUpdate"
    assert [update.findtext(name) for name in ("EnquiryNumber", "ServiceCode", "SubjectCode", "LoggedTime")] == [
        number, "SL", "OUT", "2026-11-23T09:05:00"]
    last = simulator.enquiries[number].log[-1]
    assert last.notes == "Details updated: Not a pothole: the street light is out"
    assert outcome.detail["lob_update_id"] == f"{number}:{last.number}"


@pytest.mark.parametrize(("change", "status_code", "notes"), [
    (None, "9000", "case.closed from crm"),
    ({"status": "fixed", "reason": "Filled on Tuesday"}, "4000", "Filled on Tuesday"),
    ({"status": "duplicate"}, "9100", "case.closed from crm"),
], ids=["closed", "fixed", "duplicate"])
def test_closing_a_case_sets_the_mapped_closing_status(change: dict[str, str] | None, status_code: str, notes: str,
                                                       confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    created = case_created("C-21")
    created["occurred_at"] = "2026-11-23T09:00:00+00:00"
    number = confirm.deliver(request(created)).external_ref or ""
    closed = envelope("case.closed", case={"case_id": "C-21"}, **({"change": change} if change else {}))
    closed["occurred_at"] = "2026-11-23T09:30:00+00:00"
    confirm.deliver(request(closed, external_ref=number))
    last = simulator.enquiries[number].log[-1]
    assert (last.status, last.notes, last.logged_time) == (status_code, notes, datetime(2026, 11, 23, 9, 30))


def test_an_update_to_an_unmapped_service_fails_permanently_before_calling(confirm: ConfirmAdapter,
                                                                          simulator: ConfirmSimulator) -> None:
    created = case_created("C-23")
    number = confirm.deliver(request(created)).external_ref or ""
    simulator.requests.clear()
    updated = envelope("case.updated", case={**created["case"], "service_code": "highways.unicorn"})
    assert_unmapped_service_is_refused(confirm, request(updated, external_ref=number), "highways.unicorn")
    assert simulator.requests == []


def test_a_status_confirm_has_no_code_for_goes_as_notes_and_says_so(confirm: ConfirmAdapter,
                                                                   simulator: ConfirmSimulator) -> None:
    created = case_created("C-24")
    created["occurred_at"] = "2026-11-23T09:00:00+00:00"
    number = confirm.deliver(request(created)).external_ref or ""
    changed = status_changed("C-24", "internal_referral")
    changed["occurred_at"] = "2026-11-23T09:05:00+00:00"
    changed["change"]["reason"] = "Passed to the drainage team"
    outcome = confirm.deliver(request(changed, external_ref=number))
    assert outcome.detail["status_not_mapped"] == "internal_referral"
    last = simulator.enquiries[number].log[-1]
    assert (last.status, last.notes) == ("1000", "Passed to the drainage team")  # Confirm's status left as it was


def test_our_reference_can_go_in_enquiry_reference(simulator: ConfirmSimulator,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[etree._Element] = []
    with recording_confirm(simulator, sent) as url:
        adapter = adapter_for(url, monkeypatch, reference_element="EnquiryReference")
        number = adapter.deliver(request(case_created("C-22"), our_reference="CB-ENQREF")).external_ref or ""
        found = adapter.find_delivered(request(case_created("C-22"), our_reference="CB-ENQREF"))

    fields = simulator.enquiries[number].fields
    assert fields["EnquiryReference"] == "CB-ENQREF"
    assert "ExternalSystemReference" not in fields and "ExternalSystemNumber" not in fields
    # Found by what Confirm offers: the enquiries logged lately, then each read by its number.
    assert [operation.tag for operation in sent[1:]] == ["GetEnquiryStatusChanges", "GetEnquiry"]
    assert [(child.tag, child.text) for child in sent[-1]] == [("EnquiryNumber", number)]
    assert found is not None and found.external_ref == number


@pytest.mark.parametrize(("logged_time", "in_utc"), [
    ("2026-11-23T10:15:30.123", datetime(2026, 11, 23, 10, 15, 30, 123000, tzinfo=UTC)),  # GMT
    ("2026-07-01T10:15:30.1234567", datetime(2026, 7, 1, 9, 15, 30, 123456, tzinfo=UTC)),  # BST, .NET precision
], ids=["milliseconds-gmt", "ticks-bst"])
def test_a_logged_time_with_fractional_seconds_is_read_as_london_time(logged_time: str, in_utc: datetime,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    answer = etree.Element("Response")
    updated = sub(sub(sub(answer, "OperationResponse"), "GetEnquiryStatusChangesResponse"), "UpdatedEnquiry")
    sub(updated, "EnquiryNumber", "1042")
    entry = sub(updated, "EnquiryStatusLog")
    sub(entry, "EnquiryLogNumber", "3")
    sub(entry, "EnquiryStatusCode", "4000")
    sub(entry, "LoggedTime", logged_time)
    sub(entry, "StatusLogNotes", "Pothole filled")
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    with canned_confirm(response_envelope(answer)) as url:
        adapter = adapter_for(url, monkeypatch)
        [record] = adapter.status_log_changes(since, until)
        [change] = adapter.status_changes(since, until)

    assert (record.enquiry_number, record.log_number, record.logged_time) == ("1042", "3", logged_time)
    assert change.update_id == "1042:3"
    assert change.occurred_at == in_utc
    assert change.occurred_at.tzinfo is not None and str(change.occurred_at.tzinfo) == "Europe/London"
    assert (change.reference, change.status, change.external_status_code) == ("1042", CaseStatus.fixed, "4000")


NEW_ENQUIRY_ANSWERS = {
    # As a SOAP service with a default namespace answers: Response and everything under it in Confirm's namespace.
    "default-namespace": f"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<ProcessOperationsResponse xmlns="{CONFIRM_NS}"><Response><OperationResponse><NewEnquiryResponse><Enquiry>
<EnquiryNumber>4242</EnquiryNumber></Enquiry></NewEnquiryResponse></OperationResponse></Response>
</ProcessOperationsResponse></soap:Body></soap:Envelope>""",
    "any-prefix": f"""<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<c:ProcessOperationsResponse xmlns:c="{CONFIRM_NS}"><c:ProcessOperationsResult><c:Response><c:OperationResponse>
<c:NewEnquiryResponse><c:Enquiry><c:EnquiryNumber>4242</c:EnquiryNumber></c:Enquiry></c:NewEnquiryResponse>
</c:OperationResponse></c:Response></c:ProcessOperationsResult></c:ProcessOperationsResponse></s:Body></s:Envelope>""",
    "another-version's-namespace": """<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
<soap:Body><Response xmlns="urn:confirm:v23"><OperationResponse><NewEnquiryResponse><Enquiry>
<EnquiryNumber>4242</EnquiryNumber></Enquiry></NewEnquiryResponse></OperationResponse></Response></soap:Body>
</soap:Envelope>""",
}


@pytest.mark.parametrize("answer", list(NEW_ENQUIRY_ANSWERS.values()), ids=list(NEW_ENQUIRY_ANSWERS))
def test_answers_are_read_whatever_their_namespace(answer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with canned_confirm(answer.encode()) as url:
        outcome = adapter_for(url, monkeypatch).deliver(request(case_created("NS-1")))
    assert outcome.external_ref == "4242"


def test_a_namespaced_fault_is_read_as_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = etree.Element("Response")
    sub(sub(refused, "Fault"), "Reason", "Validate enquiry.1001.Service Code 'HW' / Subject Code 'XX' is not valid")
    with canned_confirm(response_envelope(refused, namespaced=True)) as url, \
            pytest.raises(PermanentDeliveryError) as caught:
        adapter_for(url, monkeypatch).deliver(request(case_created("NS-2")))
    assert caught.value.reason == "confirm_fault" and "Subject Code 'XX'" in caught.value.message


def lookups_answer(status_element: str, *, namespaced: bool) -> bytes:
    """A GetEnquiryLookups answer whose statuses spell their code ``status_element``."""
    answer = etree.Element("Response")
    lookups = sub(sub(answer, "OperationResponse"), "GetEnquiryLookupsResponse")
    service = sub(lookups, "TypeOfService")
    sub(service, "ServiceCode", "HW")
    sub(sub(service, "EnquirySubject"), "SubjectCode", "POT")
    for code in ("1000", "2000", "3000", "4000", "9000", "9100"):
        sub(sub(lookups, "EnquiryStatus"), status_element, code)
    return response_envelope(answer, namespaced=namespaced)


@pytest.mark.parametrize("status_element", ["EnqStatusCode", "EnquiryStatusCode"])
@pytest.mark.parametrize("namespaced", [False, True], ids=["plain", "namespaced"])
def test_status_codes_are_read_in_either_spelling(status_element: str, namespaced: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = etree.Element("Response")
    sub(sub(sub(unknown, "OperationResponse"), "Fault"), "Reason", "Unknown operation GetCustomerLookups")

    def answer(body: bytes) -> Reply:
        lookups = b"GetEnquiryLookups" in body
        return 200, lookups_answer(status_element, namespaced=namespaced) if lookups else response_envelope(
            unknown, namespaced=namespaced), {}

    with answering(answer) as url:
        codes, not_offered = adapter_for(url, monkeypatch).saved_lookups()
    assert [gap.name for gap in not_offered] == ["GetCustomerLookups"]
    assert codes["statuses"] == ["1000", "2000", "3000", "4000", "9000", "9100"]
    assert codes["services"] == {"HW": ["POT"]}
    # The shipped mapping's status codes are all known: no false `broker check` errors about them.
    problems = ConfirmAdapter.unknown_code_problems(CONFIRM.mapping(), codes)
    assert [path for path, _message in problems if path[0] in ("statuses", "status_codes")] == []


def test_a_status_log_in_the_other_spelling_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = etree.Element("Response")
    updated = sub(sub(sub(answer, "OperationResponse"), "GetEnquiryStatusChangesResponse"), "UpdatedEnquiry")
    sub(updated, "EnquiryNumber", "1042")
    entry = sub(updated, "EnquiryStatusLog")
    sub(entry, "EnquiryLogNumber", "3")
    sub(entry, "EnqStatusCode", "4000")
    sub(entry, "LoggedTime", "2026-11-23T10:15:30.1230000")
    with canned_confirm(response_envelope(answer, namespaced=True)) as url:
        [change] = adapter_for(url, monkeypatch).status_changes(datetime(2026, 1, 1, tzinfo=UTC),
                                                                datetime(2027, 1, 1, tzinfo=UTC))
    assert (change.update_id, change.status, change.external_status_code) == ("1042:3", CaseStatus.fixed, "4000")


def test_lookups_are_saved_as_far_as_confirm_offers_them(simulator: ConfirmSimulator,
                                                         confirm: ConfirmAdapter) -> None:
    simulator.missing_operations.add("GetCustomerLookups")  # as the strict profile has it anyway
    codes, not_offered = confirm.saved_lookups()
    assert [gap.name for gap in not_offered] == ["GetCustomerLookups"]
    assert "Unknown operation" in not_offered[0].reason
    assert codes["services"]["HW"] == ["DRN", "POT", "SIGN"] and "4000" in codes["statuses"]
    assert not {"enquiry_methods", "customer_types", "points_of_contact"} & set(codes)
    # What was not saved is not judged: the shipped mapping's customer codes raise nothing.
    assert ConfirmAdapter.unknown_code_problems(CONFIRM.mapping(), codes) == []


def test_confirm_adapter_declares_reconciliation() -> None:
    from broker.plugins.contract import Capability

    assert {Capability.lookup, Capability.reconcile} <= ConfirmAdapter.capabilities


@pytest.mark.parametrize(("logged_time", "in_utc"), [
    ("2026-11-23T10:15:30", datetime(2026, 11, 23, 10, 15, 30, tzinfo=UTC)),
    ("2026-11-23T10:15:30Z", datetime(2026, 11, 23, 10, 15, 30, tzinfo=UTC)),
    ("2026-07-01T10:15:30+01:00", datetime(2026, 7, 1, 9, 15, 30, tzinfo=UTC)),
    ("2026-07-01T10:15:30.5+0100", datetime(2026, 7, 1, 9, 15, 30, 500000, tzinfo=UTC)),
], ids=["none", "z", "offset", "fraction-and-offset"])
def test_logged_times_with_or_without_offsets(logged_time: str, in_utc: datetime,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    answer = etree.Element("Response")
    updated = sub(sub(sub(answer, "OperationResponse"), "GetEnquiryStatusChangesResponse"), "UpdatedEnquiry")
    sub(updated, "EnquiryNumber", "7")
    entry = sub(updated, "EnquiryStatusLog")
    sub(entry, "EnquiryLogNumber", "2")
    sub(entry, "EnquiryStatusCode", "3000")
    sub(entry, "LoggedTime", logged_time)
    with canned_confirm(response_envelope(answer)) as url:
        [change] = adapter_for(url, monkeypatch).status_changes(datetime(2026, 1, 1, tzinfo=UTC),
                                                                datetime(2027, 1, 1, tzinfo=UTC))
    assert change.occurred_at == in_utc


@pytest.mark.parametrize("misbehave", ["huge-declared", "huge-streamed", "gzip-bomb"])
def test_an_answer_over_the_cap_is_refused_as_too_large(misbehave: str, confirm: ConfirmAdapter,
                                                        simulator: ConfirmSimulator) -> None:
    if misbehave == "gzip-bomb":
        simulator.gzip_bomb_next()
    else:
        simulator.huge_next(declared=misbehave == "huge-declared")
    with pytest.raises(TransientDeliveryError) as caught:
        confirm.deliver(request(case_created("BIG-1")))
    assert caught.value.reason == "response_too_large" and caught.value.may_have_landed
    assert "max_response_bytes" in caught.value.message
    assert len(simulator.enquiries) == 1  # the work was done: the next attempt must ask first


def test_a_call_that_cannot_have_landed_says_so(simulator: ConfirmSimulator, confirm: ConfirmAdapter,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.fail_next(503)
    with pytest.raises(TransientDeliveryError) as unavailable:
        confirm.deliver(request(case_created("LAND-1")))
    simulator.fail_next(500)
    with pytest.raises(TransientDeliveryError) as failing:
        confirm.deliver(request(case_created("LAND-2")))
    with socket.socket() as unused:  # bound, never listening: a connection to it is refused
        unused.bind(("127.0.0.1", 0))
        closed = adapter_for(f"http://127.0.0.1:{unused.getsockname()[1]}/ConfirmConnector", monkeypatch)
        with pytest.raises(TransientDeliveryError) as refused:
            closed.deliver(request(case_created("LAND-3")))
    assert (unavailable.value.may_have_landed, failing.value.may_have_landed, refused.value.may_have_landed) == (
        False, True, False)
    assert refused.value.reason == "connection"
