"""Never two enquiries for one case: after a create that may have landed, the Confirm adapter asks Confirm only what
Confirm can answer (the enquiries logged since the first attempt, read by number), in both simulator profiles, and
never claims "not there" when it cannot know."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.envelopes import case_created
from support.soap_targets import CONFIRM, PROFILE_PARAMS, never_claims_absent, retried, timed_out

from adapters.confirm.adapter import ConfirmAdapter
from adapters.confirm.simulator import ConfirmSimulator, Enquiry
from broker.errors import DeliveryUnconfirmed, TransientDeliveryError
from broker.plugins.contract import DeliveryOutcome, DeliveryRequest

request = CONFIRM.request


@pytest.fixture(params=PROFILE_PARAMS)
def simulator(request: pytest.FixtureRequest) -> Iterator[ConfirmSimulator]:
    yield from CONFIRM.simulated(profile=request.param)


@pytest.fixture
def confirm(simulator: ConfirmSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConfirmAdapter]:
    """An adapter that gives up on a create after half a second."""
    adapter = CONFIRM.adapter(simulator.url, monkeypatch, timeout_seconds=0.5)
    yield adapter
    adapter.close()


def created(case_id: str, *, minutes_ago: float = 0) -> DeliveryRequest:
    document = case_created(case_id)
    document["occurred_at"] = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    return request(document, our_reference=f"CB-{case_id}")


@pytest.mark.parametrize("reference_element", ["ExternalSystemReference", "EnquiryReference"])
def test_a_create_that_timed_out_after_committing_is_found_and_not_made_again(
        reference_element: str, simulator: ConfirmSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = CONFIRM.adapter(simulator.url, monkeypatch, timeout_seconds=0.5, reference_element=reference_element)
    again = timed_out(adapter, simulator, created("T-1"))
    [enquiry] = simulator.enquiries.values()  # Confirm committed it, then answered too late

    found = never_claims_absent(adapter, again)
    assert isinstance(found, DeliveryOutcome) and found.external_ref == enquiry.number
    assert found.detail["found_by_reference"] is True
    assert found.detail["lob_update_id"] == f"{enquiry.number}:1"  # its first status log is not news
    assert adapter.reconcile([again]).keys() == {"CB-T-1"}
    assert adapter.reconcile([again])["CB-T-1"].external_ref == enquiry.number
    assert len(simulator.enquiries) == 1
    adapter.close()


def test_a_create_that_never_reached_confirm_is_unconfirmed_not_absent(confirm: ConfirmAdapter,
                                                                       simulator: ConfirmSimulator) -> None:
    started = datetime.now(UTC)
    simulator.drop_next()  # the connection is dropped before Confirm does anything
    with pytest.raises(TransientDeliveryError) as caught:
        confirm.deliver(created("T-2"))
    assert caught.value.may_have_landed  # the adapter cannot tell it apart from a drop after the commit
    again = retried(created("T-2"), started)
    # A miss is no proof: the first attempt might still be in progress at Confirm.
    unconfirmed = never_claims_absent(confirm, again)
    assert isinstance(unconfirmed, DeliveryUnconfirmed) and unconfirmed.reason == "confirm_enquiry_not_seen"
    assert "CB-T-2" in unconfirmed.message
    # Reconciliation searched the whole time since the first attempt and found nothing: absent.
    assert confirm.reconcile([again]) == {}
    assert simulator.enquiries == {}


def test_no_enquiry_is_looked_up_by_our_reference(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    again = timed_out(confirm, simulator, created("T-3"))
    simulator.requests.clear()
    never_claims_absent(confirm, again)
    assert simulator.requests == [["GetEnquiryStatusChanges"], ["GetEnquiry"]]
    assert simulator.get_enquiry_keys == [["EnquiryNumber"]]  # GetEnquiry is documented by number only


def test_reconciliation_scans_once_for_many_deliveries(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    landed = [created(f"R-{n}", minutes_ago=n * 10) for n in range(14)]  # logged over the last two and a bit hours
    numbers = {sent.our_reference: confirm.deliver(sent).external_ref for sent in landed}
    for n in range(3):  # enquiries raised in Confirm directly, without our reference
        simulator.enquiries[str(5000 + n)] = Enquiry(str(5000 + n), "HW", "POT", {"EnquiryDescription": "phoned in"},
                                                     log=list(simulator.enquiries[numbers["CB-R-0"] or ""].log))
    never_sent = [created("R-LOST-1"), created("R-LOST-2", minutes_ago=5)]
    started = datetime.now(UTC) - timedelta(minutes=1)
    unconfirmed = [retried(sent, started) for sent in [*landed, *never_sent]]
    simulator.requests.clear()

    found = confirm.reconcile(unconfirmed)

    assert {reference: outcome.external_ref for reference, outcome in found.items()} == numbers
    assert simulator.requests.count(["GetEnquiryStatusChanges"]) == 1  # one scan, from the earliest
    reads = [operations for operations in simulator.requests if operations[0] == "GetEnquiry"]
    assert all(len(operations) <= 10 for operations in reads)
    assert sum(len(operations) for operations in reads) == len(numbers) + 3  # every enquiry logged, read once


def test_an_unreadable_enquiry_does_not_hide_ours(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    other = confirm.deliver(created("U-0")).external_ref or ""
    again = timed_out(confirm, simulator, created("U-1"))
    simulator.unreadable[other] = "Enquiry is locked by another user"
    found = never_claims_absent(confirm, again)
    assert isinstance(found, DeliveryOutcome) and found.external_ref != other


def test_a_search_that_could_not_read_every_enquiry_concludes_nothing(confirm: ConfirmAdapter,
                                                                      simulator: ConfirmSimulator) -> None:
    other = confirm.deliver(created("U-2")).external_ref or ""
    simulator.unreadable[other] = "Enquiry is locked by another user"
    lost = retried(created("U-3"), datetime.now(UTC))
    with pytest.raises(TransientDeliveryError) as caught:
        confirm.reconcile([lost])
    assert caught.value.reason == "confirm_search_incomplete" and other in caught.value.message
    assert isinstance(never_claims_absent(confirm, lost), DeliveryUnconfirmed)


def test_a_failed_search_is_transient_for_both(confirm: ConfirmAdapter, simulator: ConfirmSimulator) -> None:
    again = timed_out(confirm, simulator, created("F-1"))
    simulator.fail_next(500)
    with pytest.raises(TransientDeliveryError) as looking:
        confirm.find_delivered(again)
    assert looking.value.reason == "confirm_lookup_failed"
    simulator.fail_next(500)
    with pytest.raises(TransientDeliveryError):
        confirm.reconcile([again])


def test_an_enquiry_logged_long_before_the_attempt_is_found(confirm: ConfirmAdapter,
                                                            simulator: ConfirmSimulator) -> None:
    """The LoggedTime sent is the case's own time: a case reported hours before it was delivered is found too."""
    old = created("O-1", minutes_ago=9 * 60)  # longer than one six-hour window
    again = timed_out(confirm, simulator, old)
    [enquiry] = simulator.enquiries.values()
    found = confirm.reconcile([again])
    assert found["CB-O-1"].external_ref == enquiry.number
    assert simulator.requests.count(["GetEnquiryStatusChanges"]) >= 2
