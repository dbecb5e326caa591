"""The Uniform adapter against the Uniform simulator over HTTP, in its lenient and its strict profile: what it sends,
its session, and every answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from lxml import etree
from support.envelopes import case_created, note_added
from support.soap_targets import (
    PROFILE_PARAMS,
    UNIFORM,
    Reply,
    answering,
    assert_unmapped_service_is_refused,
    timed_out_then_found,
)

from adapters.common.soap import SOAP_NS, soap_fault
from adapters.uniform.adapter import UniformAdapter
from adapters.uniform.simulator import UniformSimulator
from adapters.uniform.soap import MESSAGE_NS, SERVICE_NS, TYPES_NS, request, response
from broker.errors import PermanentDeliveryError, TransientDeliveryError
from broker.model import CaseStatus

MAPPING = UNIFORM.mapping()
adapter_for = UNIFORM.adapter
request_for = UNIFORM.request


@pytest.fixture(params=PROFILE_PARAMS)
def simulator(request: pytest.FixtureRequest) -> Iterator[UniformSimulator]:
    yield from UNIFORM.simulated(profile=request.param)


@pytest.fixture
def uniform(simulator: UniformSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[UniformAdapter]:
    yield from UNIFORM.connected(simulator, monkeypatch)


def noise(case_id: str, **fields: Any) -> dict[str, Any]:
    return case_created(case_id, service_code="environment.noise",
                        **{"description": "Loud music from the flat above every night", **fields})


def logged_on_then_fault(reason: str) -> Callable[[bytes], Reply]:
    """A Uniform that lets every logon in and answers every other call with a SOAP fault giving ``reason``."""
    def answer(body: bytes) -> Reply:
        if b"LogonToConnector" in body:
            result = etree.Element("Result")
            etree.SubElement(result, "LogonSuccessful").text = "true"
            return 200, response("LogonToConnector", result), {"Set-Cookie": "ASP.NET_SessionId=x; path=/"}
        return 500, soap_fault(reason), {}

    return answer


def test_a_noise_complaint_becomes_a_general_service_request(uniform: UniformAdapter,
                                                             simulator: UniformSimulator) -> None:
    document = noise("U-1", channel="phone", attributes={"noise_source": "music", "colour": "grey"})
    document["occurred_at"] = "2026-07-01T09:15:00+00:00"  # British Summer Time: 10:15 in London
    outcome = uniform.deliver(request_for(document))

    sent = simulator.requests[outcome.external_ref or ""]
    assert sent.reference.endswith("/SR") and sent.reference.count("/") == 2  # e.g. 26/00001/SR
    assert (sent.operation, sent.complaint_type, sent.how_received) == ("SubmitGeneralServiceRequest", "NOISE",
                                                                        "TELE")
    assert sent.fields == {"NatureOfComplaint": "Loud music from the flat above every night",
                           "TimeReceived": "2026-07-01T10:15:00", "MapEast": "530000", "MapNorth": "180000"}
    assert sent.alternative_references == [("CASEBRIDGE", "CB-0001")]
    assert sent.customers == [{"type": "PUBLIC", "name": "Ada Lovelace",
                               "contacts": [("EMAIL", "ada@example.org"), ("PHONEH", "020 7946 0000")]}]
    assert sent.xtra == {"NOISESRC": "music"}  # the unmapped answer stays with us
    assert outcome.detail["lob_update_id"] == f"{sent.reference}:1_REC:"  # its first state is not news
    assert outcome.detail["technical_key"] == sent.technical_key


def test_a_uprn_is_sent_instead_of_a_map_reference(uniform: UniformAdapter, simulator: UniformSimulator) -> None:
    outcome = uniform.deliver(request_for(noise("U-2", location={"uprn": "100023336956", "easting": 530000.0,
                                                                  "northing": 180000.0})))
    assert simulator.requests[outcome.external_ref or ""].fields["UPRN"] == "100023336956"
    assert "MapEast" not in simulator.requests[outcome.external_ref or ""].fields


def test_lat_lon_only_is_converted_to_a_map_reference(uniform: UniformAdapter, simulator: UniformSimulator) -> None:
    outcome = uniform.deliver(request_for(noise("U-3", location={"lat": 51.507748, "lon": -0.127969})))
    fields = simulator.requests[outcome.external_ref or ""].fields
    assert abs(int(fields["MapEast"]) - 530000) < 150 and abs(int(fields["MapNorth"]) - 180400) < 150


def test_a_postcode_alone_fails_permanently_before_calling(uniform: UniformAdapter,
                                                          simulator: UniformSimulator) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        uniform.deliver(request_for(noise("U-4", location={"postcode": "SW1A 1AA"})))
    assert caught.value.reason == "no_location" and "UPRN" in caught.value.message
    assert simulator.calls == []


def test_markup_and_control_characters_in_free_text_stay_text(uniform: UniformAdapter,
                                                              simulator: UniformSimulator) -> None:
    hostile = "Noise</NatureOfComplaint><ComplaintType>FOOD</ComplaintType><!-- & \x01 -->"
    outcome = uniform.deliver(request_for(noise("U-4b", description=hostile)))
    sent = simulator.requests[outcome.external_ref or ""]
    assert sent.fields["NatureOfComplaint"] == hostile.replace("\x01", "")
    assert sent.complaint_type == "NOISE"


def test_dog_fouling_uses_the_dog_variant(uniform: UniformAdapter, simulator: UniformSimulator) -> None:
    outcome = uniform.deliver(request_for(case_created("U-5", service_code="environment.dog_fouling")))
    sent = simulator.requests[outcome.external_ref or ""]
    assert (sent.operation, sent.complaint_type) == ("SubmitDogServiceRequest", "DFOUL")
    assert outcome.detail["operation"] == "SubmitDogServiceRequest"


def test_anonymous_and_representative_reporters(uniform: UniformAdapter, simulator: UniformSimulator) -> None:
    anonymous = uniform.deliver(request_for(noise("U-6", reporter={"kind": "anonymous"})))
    assert simulator.requests[anonymous.external_ref or ""].customers == []
    reporter = {"kind": "representative", "role": "councillor",
                "representative": {"name": "Cllr Jane Smith", "email": "cllr.smith@example.gov.uk"},
                "on_behalf_of": {"name": "Alan Resident", "phone": "01632 960000"}}
    represented = uniform.deliver(request_for(noise("U-7", reporter=reporter), our_reference="CB-0007"))
    assert simulator.requests[represented.external_ref or ""].customers == [
        {"type": "PUBLIC", "name": "Alan Resident", "contacts": [("PHONEH", "01632 960000")]},
        {"type": "CLLR", "name": "Cllr Jane Smith", "contacts": [("EMAIL", "cllr.smith@example.gov.uk")]},
    ]


def test_one_logon_serves_many_calls_and_close_logs_off(simulator: UniformSimulator,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = adapter_for(simulator.url, monkeypatch)
    for n in range(3):
        adapter.deliver(request_for(noise(f"U-8{n}"), our_reference=f"CB-008{n}"))
    # One logon, and one more each time Uniform ended the session by itself (the strict profile does, mid-run).
    assert simulator.logons == simulator.calls.count("LogonToConnector") == 1 + simulator.expired_by_server
    assert len(simulator.sessions) == 1 and len(simulator.requests) == 3
    adapter.close()
    assert (simulator.logoffs, simulator.sessions) == (1, {})


def test_the_simulator_refuses_calls_without_a_live_session(simulator: UniformSimulator) -> None:
    body = request("GetCnCodeList", _element("ListName", "SRRECTYPE"))
    answer = httpx.post(simulator.url, content=body, headers={"Content-Type": "text/xml; charset=utf-8",
                                                               "Cookie": "ASP.NET_SessionId=forged"})
    assert answer.status_code == 500 and b"Not logged on" in answer.content
    soap12 = httpx.post(simulator.url, content=body, headers={"Content-Type": "application/soap+xml"})
    assert soap12.status_code == 415  # SOAP 1.1 only


def test_an_expired_session_is_renewed_and_the_call_sent_once_more(uniform: UniformAdapter,
                                                                   simulator: UniformSimulator) -> None:
    uniform.deliver(request_for(noise("U-9"), our_reference="CB-0009"))
    simulator.expire_sessions()
    simulator.calls.clear()
    logons = simulator.logons
    outcome = uniform.deliver(request_for(noise("U-10"), our_reference="CB-0010"))
    assert simulator.calls[:3] == ["SubmitGeneralServiceRequest", "LogonToConnector", "SubmitGeneralServiceRequest"]
    assert simulator.logons > logons
    assert [r.alternative_references for r in simulator.requests.values()] == [
        [("CASEBRIDGE", "CB-0009")], [("CASEBRIDGE", "CB-0010")]]  # refused without a session: created once
    assert outcome.external_ref in simulator.requests


def test_a_session_refused_again_after_a_fresh_logon_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    expired = logged_on_then_fault("Not logged on to the connector: the session has expired")
    with answering(expired) as url, pytest.raises(TransientDeliveryError) as caught:
        adapter_for(url, monkeypatch).deliver(request_for(noise("U-11")))
    assert caught.value.reason == "uniform_session"


def test_wrong_credentials_are_permanent_and_say_so(simulator: UniformSimulator,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    UNIFORM.assert_wrong_password_is_refused(simulator.url, monkeypatch, request_for(noise("U-12")))
    assert simulator.requests == {} and simulator.calls == ["LogonToConnector"]


def test_a_missing_password_variable_is_permanent(simulator: UniformSimulator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = adapter_for(simulator.url, monkeypatch)
    monkeypatch.delenv(UNIFORM.password_env)
    with pytest.raises(PermanentDeliveryError) as caught:
        adapter.deliver(request_for(noise("U-13")))
    assert caught.value.reason == "uniform_password_missing" and UNIFORM.password_env in caught.value.message


def test_a_complaint_type_uniform_does_not_know_is_permanent_with_its_words(uniform: UniformAdapter,
                                                                           simulator: UniformSimulator) -> None:
    del simulator.code_lists["SRRECTYPE"]["NOISE"]
    with pytest.raises(PermanentDeliveryError) as caught:
        uniform.deliver(request_for(noise("U-14")))
    assert caught.value.reason == "uniform_fault"
    assert "ComplaintType 'NOISE' is not a valid code in list SRRECTYPE" in caught.value.message
    assert simulator.requests == {}


def test_an_unmapped_service_fails_permanently_before_calling(uniform: UniformAdapter,
                                                              simulator: UniformSimulator) -> None:
    food = case_created("U-15", service_code="environment.food_hygiene")
    assert_unmapped_service_is_refused(uniform, request_for(food), "environment.food_hygiene")
    assert simulator.calls == []


def test_events_other_than_a_create_are_refused_with_a_reason(uniform: UniformAdapter) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        uniform.deliver(request_for(note_added("U-16"), external_ref="26/00001/SR"))
    assert caught.value.reason == "uniform_create_only" and "case.note_added" in caught.value.message
    already = uniform.deliver(request_for(noise("U-16"), external_ref="26/00001/SR"))
    assert already.external_ref == "26/00001/SR" and already.detail == {"already_created": True}


def test_slow_uniform_then_success_is_found_by_our_reference(simulator: UniformSimulator,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = adapter_for(simulator.url, monkeypatch, timeout_seconds=0.5)
    adapter.session.logon()
    found = timed_out_then_found(adapter, simulator, request_for(noise("U-17"), our_reference="CB-SLOW"))
    [created] = simulator.by_alternative_reference("CB-SLOW")
    assert found.external_ref == created.reference
    assert found.detail["found_by_reference"] is True
    assert adapter.find_delivered(request_for(noise("U-18"), our_reference="CB-NEVER")) is None
    adapter.close()


def test_a_lookup_refused_for_credentials_is_permanent(simulator: UniformSimulator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        adapter_for(simulator.url, monkeypatch, password="wrong").find_delivered(request_for(noise("U-18b")))
    assert caught.value.reason == "uniform_authentication"


def test_a_lookup_that_fails_for_another_reason_is_asked_again_not_created(monkeypatch: pytest.MonkeyPatch) -> None:
    timed_out = logged_on_then_fault("Timeout expired while reading service requests")
    with answering(timed_out) as url, pytest.raises(TransientDeliveryError) as caught:
        adapter_for(url, monkeypatch).find_delivered(request_for(noise("U-19")))
    assert caught.value.reason == "uniform_lookup_failed"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><LogonToConnectorResponse>
<LogonToConnectorResult><LogonSuccessful>&lol3;</LogonSuccessful></LogonToConnectorResult>
</LogonToConnectorResponse></soap:Body></soap:Envelope>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><LogonToConnectorResponse>
<LogonToConnectorResult><LogonSuccessful>true</LogonSuccessful><Message>&xxe;</Message></LogonToConnectorResult>
</LogonToConnectorResponse></soap:Body></soap:Envelope>"""


@pytest.mark.parametrize("answer", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "xxe"])
def test_a_malicious_answer_is_refused_unread(answer: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with answering(lambda _body: (200, answer, {})) as url, pytest.raises(PermanentDeliveryError) as caught:
        adapter_for(url, monkeypatch).deliver(request_for(noise("EVIL-1")))
    assert caught.value.reason == "unsafe_xml"


def test_a_hostile_answer_mid_session_is_refused(uniform: UniformAdapter, simulator: UniformSimulator) -> None:
    uniform.session.logon()
    simulator.hostile_next()
    with pytest.raises(PermanentDeliveryError) as caught:
        uniform.deliver(request_for(noise("EVIL-2")))
    assert caught.value.reason == "unsafe_xml"


def test_malicious_xml_sent_to_the_simulator_is_refused(simulator: UniformSimulator) -> None:
    answer = httpx.post(simulator.url, content=BILLION_LAUGHS, headers={"Content-Type": "text/xml"})
    assert answer.status_code == 500 and b"Bad request" in answer.content and simulator.calls == []


def test_requests_are_soap_1_1_in_uniforms_namespaces(simulator: UniformSimulator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, str]] = []
    respond = simulator.respond

    def answer(body: bytes, headers: Any) -> Any:
        seen.append((body, headers.get("SOAPAction") or ""))
        return respond(body, headers)

    monkeypatch.setattr(simulator, "respond", answer)
    adapter = adapter_for(simulator.url, monkeypatch)
    adapter.deliver(request_for(noise("U-21")))
    adapter.close()
    logon, submit = (etree.fromstring(body) for body, _action in seen[:2])
    assert logon.tag == f"{{{SOAP_NS}}}Envelope"
    assert logon.xpath("//s:LogonToConnector/s:UniformLoginCredentials/s:DatabaseID/text()",
                       namespaces={"s": SERVICE_NS}) == ["DEMO"]
    assert submit.xpath("//m:SubmitGeneralServiceRequest/t:SubmittedGeneralServiceRequest/t:ComplaintType/text()",
                        namespaces={"m": MESSAGE_NS, "t": TYPES_NS}) == ["NOISE"]
    assert [action for _body, action in seen[:2]] == [
        '"http://www.caps-solutions.co.uk/webservices/connectors/common/actions/LogonToConnector"',
        '"http://www.caps-solutions.co.uk/webservices/connectors/servicerequest/actions/SubmitGeneralServiceRequest"']


@pytest.mark.parametrize(("status", "closing_action", "canonical", "code"), [
    ("4_INV", None, CaseStatus.investigating, "4_INV"),
    ("8_CLO", "DUPR", CaseStatus.duplicate, "8_CLO/DUPR"),
    ("8_CLO", "NFA", CaseStatus.no_further_action, "8_CLO/NFA"),
    ("8_CLO", "RESFIX", CaseStatus.fixed, "8_CLO/RESFIX"),
    ("8_CLO", "REFERE", CaseStatus.not_councils_responsibility, "8_CLO/REFERE"),
    ("8_CLO", None, CaseStatus.closed, "8_CLO"),
])
def test_status_and_closing_action_map_to_canonical_statuses(status: str, closing_action: str | None,
                                                             canonical: CaseStatus, code: str,
                                                             uniform: UniformAdapter,
                                                             simulator: UniformSimulator) -> None:
    reference = uniform.deliver(request_for(noise("U-22"))).external_ref or ""
    simulator.officer_sets_status(reference, status, closing_action)
    since, until = datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC)
    [change] = uniform.status_changes(since, until)
    assert (change.reference, change.status, change.external_status_code) == (reference, canonical, code)
    assert change.update_id == f"{reference}:{status}:{closing_action or ''}"
    assert [again.update_id for again in uniform.status_changes(since, until)] == [change.update_id]  # stable


def test_unmapped_statuses_and_old_changes_are_left_out(simulator: UniformSimulator,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mapping = {**MAPPING, "statuses": {"8_CLO": "closed"}, "closing_actions": {}}
    adapter = adapter_for(simulator.url, monkeypatch, mapping=mapping)
    reference = adapter.deliver(request_for(noise("U-23"))).external_ref or ""
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert adapter.status_changes(since, datetime.now(UTC)) == []  # 1_REC has no mapping here
    simulator.officer_sets_status(reference, "8_CLO", "NFA")
    assert [c.status for c in adapter.status_changes(since, datetime.now(UTC))] == [CaseStatus.closed]
    assert adapter.status_changes(datetime.now(UTC) + timedelta(minutes=1), datetime.now(UTC)) == []
    adapter.close()


def test_code_lists(uniform: UniformAdapter, simulator: UniformSimulator) -> None:
    assert uniform.code_list("SRCUSTTYPE")["MEM_MP"] == "MP"
    saved, not_offered = uniform.saved_lookups()
    missing = {"SRCLOSEACT"} if simulator.profile == "strict" else set()  # the strict Uniform lacks that list
    assert {gap.name for gap in not_offered} == missing
    assert set(saved) == {"SRRECTYPE", "SRRECHOW", "SRCUSTTYPE", "SRCLOSEACT"} - missing
    assert "NOISE" in saved["SRRECTYPE"] and saved["SRCUSTTYPE"] == sorted(simulator.code_lists["SRCUSTTYPE"])
    with pytest.raises(TransientDeliveryError) as caught:
        uniform.code_list("NOSUCH")
    assert "does not exist" in caught.value.message


def test_code_lists_are_saved_as_far_as_uniform_offers_them(uniform: UniformAdapter,
                                                            simulator: UniformSimulator) -> None:
    simulator.missing_code_lists |= {"SRCLOSEACT", "SRCUSTTYPE"}
    saved, not_offered = uniform.saved_lookups()
    assert [gap.name for gap in not_offered] == ["SRCUSTTYPE", "SRCLOSEACT"]
    assert all("does not exist" in gap.reason for gap in not_offered)
    assert set(saved) == {"SRRECTYPE", "SRRECHOW"}
    mapping = {**MAPPING, "customer_type": "NOBODY", "closing_actions": {"GONE": "fixed"}}
    assert UniformAdapter.unknown_code_problems(mapping, saved) == []  # what was not saved is not judged


def test_a_session_that_expires_mid_run_never_makes_a_request_twice(simulator: UniformSimulator,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.session_calls = 3  # every session ends after three calls, whichever call that is
    adapter = adapter_for(simulator.url, monkeypatch)
    references = [adapter.deliver(request_for(noise(f"U-40{n}"), our_reference=f"CB-040{n}")).external_ref
                  for n in range(6)]
    adapter.close()
    assert simulator.expired_by_server >= 3 and simulator.logons >= 3  # logged on afresh each time
    assert sorted(references) == sorted(simulator.requests)  # each created once
    assert [value for r in simulator.requests.values() for _type, value in r.alternative_references] == [
        f"CB-040{n}" for n in range(6)]


@pytest.mark.parametrize("misbehave", ["huge-declared", "huge-streamed", "gzip-bomb"])
def test_an_answer_over_the_cap_is_refused_as_too_large(misbehave: str, uniform: UniformAdapter,
                                                        simulator: UniformSimulator) -> None:
    uniform.session.logon()
    if misbehave == "gzip-bomb":
        simulator.gzip_bomb_next()
    else:
        simulator.huge_next(declared=misbehave == "huge-declared")
    with pytest.raises(TransientDeliveryError) as caught:
        uniform.deliver(request_for(noise("BIG-1")))
    assert caught.value.reason == "response_too_large" and caught.value.may_have_landed
    assert len(simulator.requests) == 1  # the work was done: the next attempt must ask first


def test_unknown_codes_are_reported_against_saved_code_lists() -> None:
    lookups = {"SRRECTYPE": ["NOISE", "DFOUL"], "SRRECHOW": ["WEB", "TELE", "EMAIL", "PERSON", "LETTER", "CSP"],
               "SRCUSTTYPE": ["PUBLIC"], "SRCLOSEACT": ["RESFIX", "DUPR", "REFER", "REFERE", "NFA"]}
    problems = dict(UniformAdapter.unknown_code_problems(MAPPING, lookups))
    assert problems == {
        ("services", "environment.pests", "complaint_type"): "Uniform has no complaint type 'PEST' in SRRECTYPE",
        ("representative_customer_type",): "Uniform has no code 'CLLR' in SRCUSTTYPE",
        ("closing_actions", "NAP"): "Uniform has no code 'NAP' in SRCLOSEACT",
    }
    assert UniformAdapter.mapping_problems({**MAPPING, "statuses": {"4_INV": "pondering"}})


def _element(tag: str, text: str) -> etree._Element:
    element = etree.Element(tag)
    element.text = text
    return element
