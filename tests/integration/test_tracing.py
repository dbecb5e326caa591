"""Tracing, when turned on, follows a case through every hop with its correlation id; off, it costs nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.envelopes import case_created
from support.harness import RunningBroker

from broker.operations import tracing
from broker.settings import Settings


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(tracing.TRACING_ENV, "memory")
    tracing._tracer.cache_clear()
    yield
    monkeypatch.delenv(tracing.TRACING_ENV)
    tracing._tracer.cache_clear()


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_case_is_traced_from_intake_through_the_relay_to_the_adapter_call(traced: None, settings: Settings) -> None:
    running = RunningBroker(settings)
    try:
        sent = case_created("TRACE-1")
        assert running.post_case(sent).status_code == 202
        running.wait_settled()
    finally:
        running.stop()
    spans = tracing.finished_spans()
    names = {span.name for span in spans}
    assert {"casebridge.intake", "casebridge.relay.publish", "casebridge.delivery",
            "casebridge.adapter.deliver"} <= names
    correlation = sent["event_id"]  # no correlation id sent: the event's own id is it
    for name in ("casebridge.intake", "casebridge.delivery", "casebridge.adapter.deliver"):
        carried = [span for span in spans if span.name == name
                   and correlation in str(span.attributes.get("casebridge.correlation_id"))]
        assert carried, f"{name} has no span carrying the case's correlation id"
    adapter_call = next(span for span in spans if span.name == "casebridge.adapter.deliver")
    delivery = next(span for span in spans if span.name == "casebridge.delivery"
                    and span.context.span_id == adapter_call.parent.span_id)
    assert delivery.attributes["casebridge.target"] == "highways"


def test_tracing_is_off_unless_asked_for() -> None:
    tracing._tracer.cache_clear()
    with tracing.span("casebridge.anything", target="x") as current:
        assert current is None
    assert tracing.finished_spans() == []
