"""Environmental health cases to Uniform and their progress back, end to end through the broker (RabbitMQ and
the in-process transport, PostgreSQL and SQLite), against the Uniform simulator in both profiles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.receiver import WebhookReceiver
from support.soap_targets import PROFILE_PARAMS, UNIFORM, failure_of, poll

from adapters.uniform.simulator import UniformSimulator
from broker.store.tables import FailedMessage

ENVIRONMENTAL_HEALTH = {"name": "environmental health to Uniform",
                        "services": ["environment.noise", "environment.dog_fouling"], "events": ["case.created"]}


@pytest.fixture(params=PROFILE_PARAMS)
def simulator(request: pytest.FixtureRequest) -> Iterator[UniformSimulator]:
    yield from UNIFORM.simulated(profile=request.param)


@pytest.fixture
def mappings_dir(tmp_path: Path, receiver: WebhookReceiver, simulator: UniformSimulator,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    return UNIFORM.broker_mappings(tmp_path / "mappings", monkeypatch, url=simulator.url, crm_url=receiver.url,
                                   route=ENVIRONMENTAL_HEALTH)


def noise(case_id: str, **fields: Any) -> dict[str, Any]:
    return case_created(case_id, service_code="environment.noise", description="Barking dog all night", **fields)


def test_a_noise_complaint_reaches_uniform_and_its_closure_comes_back(running: RunningBroker,
                                                                      simulator: UniformSimulator,
                                                                      receiver: WebhookReceiver) -> None:
    assert running.post_case(noise("UN-1")).status_code == 202
    assert running.wait_settled() == {"delivered": 1}
    case = running.client.get("/v1/cases/UN-1").json()
    reference = case["external_refs"]["uniform"]
    request = simulator.requests[reference]
    assert (request.complaint_type, request.alternative_references[0][0]) == ("NOISE", "CASEBRIDGE")
    assert request.alternative_references[0][1].startswith("CB-")

    # Its first state in Uniform is the create itself: not news for the CRM.
    assert poll(running)["targets"] == {"uniform": {"changes": 1, "emitted": 0}}

    simulator.officer_sets_status(reference, "4_INV")
    assert poll(running)["targets"] == {"uniform": {"changes": 1, "emitted": 1}}
    simulator.officer_sets_status(reference, "8_CLO", "DUPR")
    assert poll(running)["targets"] == {"uniform": {"changes": 1, "emitted": 1}}
    running.wait_until(lambda: len(receiver.on("/crm")) == 2, what="both changes at the CRM")
    changes = [sent.body["event"] for sent in receiver.on("/crm")]
    assert [(e["source"], e["case"]["case_id"], e["change"]["status"], e["change"]["external_status_code"])
            for e in changes] == [("uniform", "UN-1", "investigating", "4_INV"),
                                  ("uniform", "UN-1", "duplicate", "8_CLO/DUPR")]
    assert running.client.get("/v1/cases/UN-1").json()["status"] == "duplicate"

    # Uniform keeps reporting the request as changed: the same state is never sent twice.
    assert poll(running)["targets"] == {"uniform": {"changes": 1, "emitted": 0}}
    running.wait_settled()
    assert len(receiver.on("/crm")) == 2
    steps = [(e["step"], e["actor"]) for e in running.client.get("/v1/cases/UN-1/history").json()["entries"]]
    assert ("received", "target:uniform") in steps


def test_a_session_that_expires_mid_run_is_renewed_without_a_duplicate(running: RunningBroker,
                                                                       simulator: UniformSimulator) -> None:
    running.post_case(noise("UN-2"))
    assert running.wait_settled() == {"delivered": 1}
    simulator.expire_sessions()  # Uniform's session timeout passes between two cases
    running.post_case(case_created("UN-3", service_code="environment.dog_fouling"))
    assert running.wait_settled() == {"delivered": 2}
    assert simulator.logons == 2
    assert sorted(r.operation for r in simulator.requests.values()) == ["SubmitDogServiceRequest",
                                                                         "SubmitGeneralServiceRequest"]
    refs = {running.client.get(f"/v1/cases/{case_id}").json()["external_refs"]["uniform"]
            for case_id in ("UN-2", "UN-3")}
    assert refs == set(simulator.requests)
    with running.broker.store.read() as session:
        assert session.scalars(select(FailedMessage)).all() == []


def test_an_unknown_complaint_type_fails_permanently_with_the_reason(running: RunningBroker,
                                                                     simulator: UniformSimulator) -> None:
    del simulator.code_lists["SRRECTYPE"]["NOISE"]  # this council's Uniform has no NOISE complaint type
    failed = failure_of(running, noise("UN-4"))
    assert (failed.error_class, failed.reason) == ("permanent", "uniform_fault")
    assert "ComplaintType 'NOISE' is not a valid code in list SRRECTYPE" in failed.error_text
    assert simulator.requests == {}


def test_wrong_credentials_fail_permanently_saying_so(running: RunningBroker, simulator: UniformSimulator) -> None:
    simulator.credentials = ("DEMO", "casebridge", "rotated-yesterday")
    failed = failure_of(running, noise("UN-5"))
    assert (failed.error_class, failed.reason) == ("permanent", "uniform_authentication")
    assert "credentials" in failed.error_text
    assert simulator.requests == {}


def test_a_malicious_answer_is_refused_and_recorded(running: RunningBroker, simulator: UniformSimulator) -> None:
    simulator.hostile_next()
    failed = failure_of(running, noise("UN-6"))
    assert (failed.error_class, failed.reason) == ("permanent", "unsafe_xml")


def test_uniform_slow_then_succeeding_creates_one_request(running: RunningBroker,
                                                          simulator: UniformSimulator) -> None:
    running.post_case(noise("UN-7"))  # logs on
    running.wait_settled()
    simulator.slow_next(2.0)  # creates the request, answers after our 1 s timeout
    running.post_case(noise("UN-8"))
    assert running.wait_settled(timeout=60) == {"delivered": 2}
    assert len(simulator.requests) == 2
    assert len({request.alternative_references[0][1] for request in simulator.requests.values()}) == 2
    entries = running.client.get("/v1/cases/UN-8/history").json()["entries"]
    [delivered] = [entry for entry in entries if entry["step"] == "delivered"]
    assert delivered["detail"]["found_by_reference"] is True  # asked Uniform before sending it again
