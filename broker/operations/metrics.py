"""Metrics in Prometheus' format, at ``/metrics`` on the API and on each ``broker worker`` / ``broker scheduler``.

Two kinds. What happens is counted where it happens: events accepted and refused, deliveries by outcome, the
delivery latency from acceptance to the LOB system's confirmation, retries, batch rows and durations, LOB updates
polled. What is, is read from the store when Prometheus scrapes (at most once every few seconds): failed messages
open by target and cause, each target's circuit, the outbox backlog and its oldest row's age, the store's size, each
schedule's last success; and, where RabbitMQ is used, each delivery queue's depth.

With ``PROMETHEUS_MULTIPROC_DIR`` set (several API processes behind one port), counts from every process are
added up, as ``prometheus-client`` does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from broker.logging import describe_error

log = structlog.get_logger("casebridge.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

EVENTS_ACCEPTED = Counter("casebridge_events_accepted", "Events taken in, by sending system, channel and type.",
                          ["source", "via", "event_type"])
EVENTS_REFUSED = Counter("casebridge_events_refused", "Events refused at intake, by sending system and reason.",
                         ["source", "reason"])
DELIVERIES = Counter("casebridge_deliveries", "What became of each delivery a worker handled, by target.",
                     ["target", "outcome"])
DELIVERY_RETRIES = Counter("casebridge_delivery_retries", "Deliveries put back to wait for another try, by target.",
                           ["target"])
DELIVERY_LATENCY = Histogram(
    "casebridge_delivery_latency_seconds", "From the event's acceptance to the target's confirmation, by target.",
    ["target"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
INTAKE_TRANSACTION_EVENTS = Histogram(
    "casebridge_intake_transaction_events", "Events recorded by each intake transaction (group commit shares one).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500, 1000),
)
POINTERS_PUBLISHED = Counter(
    "casebridge_pointers_published", "Delivery pointers the outbox relay published, by how it came by them: handed "
    "over by intake in its own process as the transaction committed, or taken from the store.", ["how"])
BATCH_ROWS = Counter("casebridge_batch_rows", "Rows exported or imported by batch schedules.", ["schedule"])
BATCH_DURATION = Histogram("casebridge_batch_duration_seconds", "How long each batch run took.", ["schedule"],
                           buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
LOB_UPDATES = Counter("casebridge_lob_updates_polled", "Status changes read from LOB systems, by target.",
                      ["target"])

#: Open failed messages are counted per cause for this many causes per target, the rest together as ``other``.
TOP_CAUSES = 20


class StoreCollector(Collector):
    """The store's state as gauges, read at most every ``cache_seconds``."""

    def __init__(self, read: Callable[[], Sequence[Metric]], *, cache_seconds: float = 5.0) -> None:
        self._read = read
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._metrics: Sequence[Metric] = ()

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: registering must not read the store (it may not be migrated yet)."""
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self._cache_seconds:
                try:
                    self._metrics = self._read()
                except Exception as exc:  # the store away: /health/ready says so; the counts still answer
                    log.warning("metrics.store_unread", error=describe_error(exc))
                    self._metrics = ()
                self._at = time.monotonic()
            return list(self._metrics)


def store_metrics(store: Any, targets: Sequence[str], queue_depths: Callable[[], dict[str, int]] | None
                  ) -> Callable[[], Sequence[Metric]]:
    """A reader of the store's gauges (and the queues' depths, where there are queues)."""
    def read() -> Sequence[Metric]:
        from broker.operations.status import store_gauges

        gauges = store_gauges(store, targets, top_causes=TOP_CAUSES)
        failed = GaugeMetricFamily("casebridge_failed_messages_open", "Failed messages not yet handled.",
                                   labels=["target", "cause"])
        for (target, cause), count in gauges.failed_open.items():
            failed.add_metric([target, cause], count)
        circuit = GaugeMetricFamily("casebridge_circuit_state", "Each target's circuit: 1 for its current state.",
                                    labels=["target", "state"])
        for target in targets:
            current = gauges.circuits.get(target, "closed")
            for state in ("closed", "open", "half_open"):
                circuit.add_metric([target, state], 1.0 if state == current else 0.0)
        metrics: list[Metric] = [
            failed, circuit,
            GaugeMetricFamily("casebridge_outbox_backlog", "Delivery pointers waiting to be published.",
                              value=gauges.outbox_backlog),
            GaugeMetricFamily("casebridge_outbox_oldest_seconds", "Age of the oldest pointer waiting to be published.",
                              value=gauges.outbox_oldest_seconds),
            GaugeMetricFamily("casebridge_store_bytes", "The store's size on disk.", value=gauges.store_bytes),
        ]
        success = GaugeMetricFamily("casebridge_schedule_last_success_timestamp_seconds",
                                    "When each schedule last ran to success (Unix time).", labels=["schedule"])
        for schedule, at in gauges.last_success.items():
            success.add_metric([schedule], at)
        metrics.append(success)
        if queue_depths is not None:
            depth = GaugeMetricFamily("casebridge_delivery_queue_depth", "Pointers waiting in each target's queue.",
                                      labels=["target"])
            try:
                for target, count in queue_depths().items():
                    depth.add_metric([target], count)
            except Exception:  # RabbitMQ away: the gauge is left out, the rest still answers
                pass
            metrics.append(depth)
        return metrics

    return read


def install_store_collector(collector: Collector) -> None:
    """Register the store's gauges once per process (a second broker in one process replaces the first's)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            REGISTRY.unregister(_installed)
        REGISTRY.register(collector)
        _installed = collector


_install_lock = threading.Lock()
_installed: Collector | None = None


def exposition() -> bytes:
    """The text Prometheus scrapes: this process's metrics, or every process's under PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if _installed is not None:
            registry.register(_installed)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
