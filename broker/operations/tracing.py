"""OpenTelemetry spans across the hops: intake, the outbox relay, the delivery and the adapter's call.

Off by default, and then nothing of OpenTelemetry is imported. ``CASEBRIDGE_TRACING=otlp`` sends spans to an OTLP
collector (``OTEL_EXPORTER_OTLP_ENDPOINT``, as OpenTelemetry's own variables say; install the ``tracing`` extra);
``console`` prints them. Each span carries the events' correlation ids (``casebridge.correlation_id``), so one case's
spans can be found across processes even though the queue between them carries only a pointer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from typing import Any

TRACING_ENV = "CASEBRIDGE_TRACING"
SERVICE_NAME = "casebridge"


@cache
def _tracer() -> Any:
    """The tracer, or None while tracing is off (the default)."""
    mode = os.environ.get(TRACING_ENV, "off").strip().lower()
    if mode in ("", "off", "none", "false", "0"):
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif mode == "memory":  # for tests: spans kept in the process, see finished_spans()
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        _kept.append(InMemorySpanExporter())
        provider.add_span_processor(SimpleSpanProcessor(_kept[-1]))
    else:
        raise ValueError(f"{TRACING_ENV}={mode!r}: use otlp, console or off")
    trace.set_tracer_provider(provider)
    return provider.get_tracer("casebridge")


#: The in-memory exporter of ``CASEBRIDGE_TRACING=memory``.
_kept: list[Any] = []


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span around a hop, with ``casebridge.*`` attributes; nothing at all while tracing is off."""
    tracer = _tracer()
    if tracer is None:
        return nullcontext()
    return _span(tracer, name, attributes)


@contextmanager
def _span(tracer: Any, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
    with tracer.start_as_current_span(name) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"casebridge.{key}", value if isinstance(value, str | int | float | bool)
                                      else [str(item) for item in value])
        yield current


def finished_spans() -> list[Any]:
    """The spans recorded so far with ``CASEBRIDGE_TRACING=memory`` (tests)."""
    if _tracer() is None or not _kept:
        return []
    return list(_kept[-1].get_finished_spans())
