"""A worker calls a slow target for several cases at once, never more than the target's concurrency, never two
events of one case side by side; one at a time while the target's circuit is not closed, or while it answers
too quickly for threads to pay."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from support.envelopes import case_created, status_changed
from support.harness import RunningBroker
from support.receiver import Received, WebhookReceiver

from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.config import WebhookConfig
from broker.config.models import CircuitPolicy
from broker.delivery.circuit import CircuitBreaker
from broker.delivery.worker import QUICK_CALL_SECONDS, DeliveryWorker
from broker.plugins.contract import DeliveryOutcome, DeliveryRequest
from broker.store.database import Store
from broker.store.tables import DeliveryRecord
from broker.transport.pointer import Pointer

#: How long the stand-in target takes to answer each call.
SLOW = 0.4


def most_at_once(calls: list[Received], took: float) -> int:
    """The most calls the target was inside at one moment, each taking ``took`` seconds from its arrival."""
    starts = sorted(call.at for call in calls)
    return max(sum(1 for other in starts if start <= other < start + took * 0.9) for start in starts)


def webhook(receiver: WebhookReceiver) -> WebhookAdapter:
    config = WebhookConfig.model_validate({"url": f"{receiver.url}/highways", "timeout_seconds": 10})
    return WebhookAdapter("highways", config, {})


def pointers_of(store: Store) -> list[Pointer]:
    with store.read() as session:
        ids = session.scalars(select(DeliveryRecord.id).where(DeliveryRecord.target == "highways")
                              .order_by(DeliveryRecord.id)).all()
    return [Pointer(delivery_id, False) for delivery_id in ids]


@pytest.fixture
def idle(running: RunningBroker) -> RunningBroker:
    """The broker's store and API, with no consumers: the test plays the worker."""
    running.broker.shutdown()
    running.broker.store = Store(running.settings.database_url)
    return running


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_a_window_of_cases_is_sent_several_at_once_up_to_the_targets_concurrency(
        idle: RunningBroker, receiver: WebhookReceiver) -> None:
    for number in range(7):
        assert idle.post_case(case_created(f"CC-{number}")).status_code == 202
    worker = DeliveryWorker(idle.broker.store, {"highways": webhook(receiver)}, concurrency={"highways": 3})
    receiver.slow(60, SLOW)
    started = time.monotonic()
    try:
        results = worker.handle_batch(pointers_of(idle.broker.store))
    finally:
        worker.close()
    took = time.monotonic() - started
    assert results == ["delivered"] * 7
    calls = receiver.on("/highways")
    assert len(calls) == 7 and set(receiver.event_counts("/highways").values()) == {1}
    assert most_at_once(calls, SLOW) == 3
    # Three rounds of three, two and... at most three calls each: not seven calls one after another.
    assert took < 5 * SLOW, took
    with idle.broker.store.read() as session:
        states = session.scalars(select(DeliveryRecord.state).where(DeliveryRecord.target == "highways")).all()
    assert set(states) == {"delivered"}


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_a_cases_later_events_are_not_sent_beside_its_first(idle: RunningBroker, receiver: WebhookReceiver) -> None:
    for number in range(3):
        case_id = f"CO-{number}"
        assert idle.post_case(case_created(case_id)).status_code == 202
        assert idle.post_event(case_id, status_changed(case_id, "in_progress")).status_code == 202
    worker = DeliveryWorker(idle.broker.store, {"highways": webhook(receiver)}, concurrency={"highways": 6})
    receiver.slow(60, SLOW)
    try:
        results = worker.handle_batch(pointers_of(idle.broker.store))
    finally:
        worker.close()
    # Each case's create and status change are in the window: the creates go together, the changes wait for them.
    assert results == ["delivered", "waiting"] * 3
    calls = receiver.on("/highways")
    assert [call.body["event"]["event_type"] for call in calls] == ["case.created"] * 3
    assert most_at_once(calls, SLOW) == 3


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_while_the_circuit_is_not_closed_calls_go_one_at_a_time(idle: RunningBroker,
                                                                receiver: WebhookReceiver) -> None:
    for number in range(3):
        assert idle.post_case(case_created(f"CH-{number}")).status_code == 202
    breaker = CircuitBreaker("highways", CircuitPolicy(failures=1, open_seconds=0.05))
    breaker.failed("http_503")
    time.sleep(0.1)
    assert breaker.seconds_until_probe() == 0 and breaker.state == "half_open"
    worker = DeliveryWorker(idle.broker.store, {"highways": webhook(receiver)}, breakers={"highways": breaker},
                            concurrency={"highways": 3})
    receiver.slow(60, SLOW)
    try:
        results = worker.handle_batch(pointers_of(idle.broker.store))
    finally:
        worker.close()
    assert results == ["delivered"] * 3
    assert most_at_once(receiver.on("/highways"), SLOW) == 1
    assert breaker.state == "closed"


def test_the_running_broker_sends_a_slow_targets_cases_side_by_side_and_each_cases_events_in_order(
        running: RunningBroker, receiver: WebhookReceiver) -> None:
    receiver.slow(120, 0.2)
    cases = [f"CR-{number}" for number in range(5)]
    for case_id in cases:
        assert running.post_case(case_created(case_id)).status_code == 202
    for status in ("in_progress", "action_scheduled"):
        for case_id in cases:
            assert running.post_event(case_id, status_changed(case_id, status)).status_code == 202
    assert running.wait_settled(timeout=60) == {"delivered": 15}
    calls = receiver.on("/highways")
    assert set(receiver.event_counts("/highways").values()) == {1}
    for case_id in cases:
        sent = [(call.body["event"]["event_type"], call.body["event"].get("change", {}).get("status"))
                for call in calls if call.body["event"]["case"]["case_id"] == case_id]
        assert sent == [("case.created", None), ("case.status_changed", "in_progress"),
                        ("case.status_changed", "action_scheduled")], sent
    assert 2 <= most_at_once(calls, 0.2) <= 4  # the target's default concurrency is four


class ThreadNoting(WebhookAdapter):
    """The webhook adapter, noting the thread each call was made on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[str] = []

    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        self.threads.append(threading.current_thread().name)
        return super().deliver(request)


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_a_target_that_answers_at_once_is_called_on_the_workers_own_thread_until_it_slows_down(
        idle: RunningBroker, receiver: WebhookReceiver) -> None:
    config = WebhookConfig.model_validate({"url": f"{receiver.url}/highways", "timeout_seconds": 10})
    adapter = ThreadNoting("highways", config, {})
    worker = DeliveryWorker(idle.broker.store, {"highways": adapter}, concurrency={"highways": 3})
    handled: set[int] = set()

    def next_window(count: int) -> list[str]:
        for _ in range(count):
            assert idle.post_case(case_created()).status_code == 202
        window = [pointer for pointer in pointers_of(idle.broker.store) if pointer.delivery_id not in handled]
        handled.update(pointer.delivery_id for pointer in window)
        adapter.threads.clear()
        assert worker.handle_batch(window) == ["delivered"] * count
        return list(adapter.threads)

    try:
        # Nothing is known of the target yet: the first window's calls are spread over the worker's threads.
        assert all(name.startswith("deliver-") for name in next_window(4))
        for _ in range(5):  # a first call on a cold connection can be slow: the average falls as answers come quick
            if worker.call_seconds["highways"] < QUICK_CALL_SECONDS:
                break
            next_window(4)
        assert worker.call_seconds["highways"] < QUICK_CALL_SECONDS
        # It answers in well under the threshold: the next window is called on the consumer's own thread.
        assert set(next_window(4)) == {threading.current_thread().name}
        receiver.slow(60, SLOW)
        assert set(next_window(3)) == {threading.current_thread().name}  # decided before it slowed down
        assert worker.call_seconds["highways"] > QUICK_CALL_SECONDS
        since = len(receiver.on("/highways"))
        assert all(name.startswith("deliver-") for name in next_window(3))
        assert most_at_once(receiver.on("/highways")[since:], SLOW) == 3
    finally:
        worker.close()
