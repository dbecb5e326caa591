"""The contract kit itself: each suite fails for an adapter that breaks its promise, and passes for one that keeps
it. Run on deliberately broken variants of the webhook adapter, in a pytest of their own."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

BROKEN = textwrap.dedent('''
    from typing import Any, ClassVar

    from adapters.webhook.adapter import WebhookAdapter
    from adapters.webhook.receiver import WebhookReceiver
    from broker.sdk import Capability, DeliveryOutcome, DeliveryRequest, PermanentDeliveryError, Sandbox
    from broker.sdk import TransientDeliveryError
    from broker.testing import AdapterContract, CoreContract, Lob, LookupContract


    class Forgetful(WebhookAdapter):
        """Never finds what an earlier attempt made: a retry after a timeout makes a second record."""
        def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
            return None


    class Impatient(WebhookAdapter):
        """Takes 429 for a refusal of the data."""
        def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
            try:
                return super().deliver(request)
            except TransientDeliveryError as error:
                if error.reason == "http_429":
                    raise PermanentDeliveryError("http_429", "refused") from error
                raise


    class Boastful(WebhookAdapter):
        """Declares a capability it proves nowhere."""
        capabilities: ClassVar[frozenset[Capability]] = WebhookAdapter.capabilities | {Capability.poll_updates}


    class Excused(Boastful):
        pass


    class Fragile(WebhookAdapter):
        """Cannot be closed twice."""
        closed = False
        def close(self) -> None:
            if self.closed:
                raise RuntimeError("closed already")
            self.closed = True
            super().close()


    PROVEN_ELSEWHERE = {capability: "proven against the real webhook adapter in test_contract_webhook.py"
                        for capability in (Capability.create, Capability.update, Capability.lookup)}


    class Base(AdapterContract):
        adapter_name = "webhook"
        bypass_reasons: ClassVar[dict[Capability | str, str]] = PROVEN_ELSEWHERE

        def sandbox(self) -> Sandbox:
            return WebhookReceiver()

        def settings(self, lob: Lob) -> dict[str, Any]:
            return {"url": lob.url, "lookup_url": f"{lob.url}/received", "timeout_seconds": lob.timeout_seconds}


    class TestForgetful(Base, LookupContract):
        adapter_class = Forgetful


    class TestImpatient(Base, CoreContract):
        adapter_class = Impatient


    class TestBoastful(Base, CoreContract):
        adapter_class = Boastful


    class TestExcused(Base, CoreContract):
        adapter_class = Excused
        bypass_reasons: ClassVar[dict[Capability | str, str]] = {
            **PROVEN_ELSEWHERE, Capability.poll_updates: "the receiver has no status changes to report"}


    class TestFragile(Base, CoreContract):
        adapter_class = Fragile
''')


def test_each_broken_promise_fails_its_suite_and_only_that(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_subprocess("-q", "-rA", "-p", "no:cacheprovider", "-k",
                                           "same_event_twice or 429 or declared_capability or close_is_safe "
                                           "or 5xx or never_landed")
    outcomes = {line.split(" ")[1]: line.split(" ")[0] for line in result.outlines
                if line.startswith(("PASSED ", "FAILED ", "ERROR "))}
    lines = "\n".join(result.outlines)
    failed = {test for test, outcome in outcomes.items() if outcome != "PASSED"}
    assert failed == {
        "test_broken.py::TestForgetful::test_the_same_event_twice_leaves_one_record",
        "test_broken.py::TestImpatient::test_429_is_transient_and_its_retry_after_honoured",
        "test_broken.py::TestBoastful::test_each_declared_capability_is_proven_or_bypassed",
        "test_broken.py::TestFragile::test_close_is_safe_twice",
    }, lines
    assert outcomes["test_broken.py::TestExcused::test_each_declared_capability_is_proven_or_bypassed"] == "PASSED"
    assert outcomes["test_broken.py::TestForgetful::test_a_delivery_that_never_landed_is_not_found"] == "PASSED"
    assert "poll_updates but no suite proves it here: subclass PollContract" in lines
