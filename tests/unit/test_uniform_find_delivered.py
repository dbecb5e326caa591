"""Never two service requests for one case: after a create that may have landed, the Uniform adapter trusts its
search by our alternative reference whether or not the answer echoes the reference, in both simulator profiles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from lxml import etree
from support.envelopes import case_created
from support.soap_targets import PROFILE_PARAMS, UNIFORM, Reply, answering, never_claims_absent, timed_out

from adapters.uniform.adapter import UniformAdapter
from adapters.uniform.simulator import UniformSimulator
from adapters.uniform.soap import response
from broker.errors import TransientDeliveryError
from broker.plugins.contract import DeliveryOutcome

request_for = UNIFORM.request


@pytest.fixture(params=PROFILE_PARAMS)
def simulator(request: pytest.FixtureRequest) -> Iterator[UniformSimulator]:
    yield from UNIFORM.simulated(profile=request.param)


@pytest.fixture
def uniform(simulator: UniformSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[UniformAdapter]:
    """An adapter, logged on, that gives up on a submit after half a second."""
    adapter = UNIFORM.adapter(simulator.url, monkeypatch, timeout_seconds=0.5)
    adapter.session.logon()
    yield adapter
    adapter.close()


def noise(case_id: str) -> dict[str, Any]:
    return case_created(case_id, service_code="environment.noise", description="Music all night")


def test_a_submit_that_timed_out_after_committing_is_found_and_not_made_again(uniform: UniformAdapter,
                                                                              simulator: UniformSimulator) -> None:
    again = timed_out(uniform, simulator, request_for(noise("T-1"), our_reference="CB-T-1"))
    [made] = simulator.requests.values()  # Uniform committed it, then answered too late
    found = never_claims_absent(uniform, again)
    assert isinstance(found, DeliveryOutcome) and found.external_ref == made.reference
    assert found.detail["found_by_reference"] is True
    assert found.detail["lob_update_id"] == f"{made.reference}:1_REC:"  # its first state is not news
    assert len(simulator.requests) == 1


def test_a_submit_that_never_reached_uniform_is_absent(uniform: UniformAdapter, simulator: UniformSimulator) -> None:
    """Uniform can search by our reference: its "no such request" is an answer, and the create may go ahead."""
    simulator.drop_next()
    sent = request_for(noise("T-2"), our_reference="CB-T-2")
    with pytest.raises(TransientDeliveryError):
        uniform.deliver(sent)
    assert uniform.find_delivered(sent) is None
    assert simulator.requests == {}


def found_request(alternatives: list[tuple[str, str]] | None) -> Any:
    """A Uniform whose search finds request 26/00077/SR, echoing ``alternatives`` (or no AlternativeReferences)."""
    def answer(body: bytes) -> Reply:
        if b"LogonToConnector" in body:
            result = etree.Element("Result")
            etree.SubElement(result, "LogonSuccessful").text = "true"
            return 200, response("LogonToConnector", result), {"Set-Cookie": "ASP.NET_SessionId=x; path=/"}
        result = etree.Element("Result")
        identification = etree.SubElement(etree.SubElement(result, "GeneralServiceRequest"),
                                          "ServiceRequestIdentification")
        etree.SubElement(identification, "ReferenceValue").text = "26/00077/SR"
        if alternatives is not None:
            echoed = etree.SubElement(identification, "AlternativeReferences")
            for reference_type, value in alternatives:
                alternative = etree.SubElement(echoed, "AlternativeReference")
                etree.SubElement(alternative, "ReferenceType").text = reference_type
                etree.SubElement(alternative, "ReferenceValue").text = value
        return 200, response("GetGeneralServiceRequestByReferenceValue", result), {}

    return answering(answer)


@pytest.mark.parametrize(("alternatives", "ours"), [
    (None, True),  # the answer does not echo them: the search by our reference is trusted
    ([("CASEBRIDGE", "CB-ECHO")], True),
    ([("FMS", "1234"), ("CASEBRIDGE", "CB-ECHO")], True),
    ([("CASEBRIDGE", "CB-SOMEONE-ELSE")], False),  # it echoes them, and ours is not among them: not ours
], ids=["not-echoed", "echoed", "echoed-among-others", "echoed-without-ours"])
def test_the_search_by_our_reference_is_trusted_unless_its_echo_says_otherwise(
        alternatives: list[tuple[str, str]] | None, ours: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with found_request(alternatives) as url:
        adapter = UNIFORM.adapter(url, monkeypatch)
        found = adapter.find_delivered(request_for(noise("E-1"), our_reference="CB-ECHO"))
    assert (found.external_ref if found else None) == ("26/00077/SR" if ours else None)
