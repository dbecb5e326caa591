"""Order is the sender's, not the race's: a case's events are taken in in the order they were published.

Two workers consume the intake queue (RabbitMQ gives it to one at a time); a follow-up that overtakes its case is
held back and taken in right behind it; one whose case never comes is failed with the reason, and joins the case's
history if the case comes later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
from sqlalchemy import select
from support.envelopes import case_created, note_added, status_changed
from support.harness import RunningBroker
from support.proxy import CuttableProxy
from support.receiver import WebhookReceiver
from support.services import AMQP_USER, pika_connection
from test_amqp_intake import Crm

from broker.runtime.process import Broker
from broker.settings import Settings
from broker.store.tables import EventRecord, FailedMessage, HeldEvent


@pytest.fixture
def crm(running: RunningBroker) -> Iterator[Crm]:
    publisher = Crm(running)
    yield publisher
    if publisher.rabbitmq:
        publisher.connection.close()


@pytest.fixture
def second_worker(settings: Settings, running: RunningBroker) -> Iterator[Broker]:
    """Another worker process's consumers, on their own connections, against the same store and queues."""
    other = Broker(settings)
    other.start_relay()
    other.start_workers()
    assert other.wait_ready(30)
    yield other
    other.shutdown()


def events_of(case_id: str) -> list[dict[str, Any]]:
    return [status_changed(case_id, "in_progress"), note_added(case_id, "Crew on site"),
            status_changed(case_id, "action_scheduled"), note_added(case_id, "Works booked")]


def publish(crm: Crm, body: dict[str, Any]) -> None:
    crm.publish(body, body["event_type"])
    if crm.rabbitmq:
        crm.connection.process_data_events(0)


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_take_in_each_cases_events_in_the_order_they_were_published(
        running: RunningBroker, second_worker: Broker, crm: Crm, receiver: WebhookReceiver) -> None:
    cases = [f"ORDER-{number:03d}" for number in range(100)]
    published: dict[str, list[str]] = {case_id: [] for case_id in cases}
    follow_ups = {case_id: events_of(case_id) for case_id in cases}
    for case_id in cases:  # every case's create, then its follow-ups 50 ms apart, cases interleaved
        created = case_created(case_id)
        publish(crm, created)
        published[case_id].append(created["event_id"])
    for step in range(4):
        time.sleep(0.05)
        for case_id in cases:
            body = follow_ups[case_id][step]
            publish(crm, body)
            published[case_id].append(body["event_id"])

    expected = len(cases) * 5
    running.wait_until(lambda: len(receiver.on("/highways")) >= expected, timeout=120,
                       what="every event at the target")
    running.wait_settled(timeout=60)
    arrived: dict[str, list[str]] = {case_id: [] for case_id in cases}
    for item in receiver.on("/highways"):
        event = item.body["event"]
        arrived[event["case"]["case_id"]].append(event["event_id"])
    reordered = [case_id for case_id in cases if arrived[case_id] != published[case_id]]
    assert not reordered, f"{len(reordered)} case(s) reached the target out of publish order: {reordered[:5]}"
    with running.broker.store.read() as session:
        assert session.scalars(select(FailedMessage)).all() == []
        sequences = {row.event_id: row.sequence for row in session.execute(
            select(EventRecord.event_id, EventRecord.sequence))}
    for case_id in cases:
        assert [sequences[event_id] for event_id in published[case_id]] == [1, 2, 3, 4, 5], case_id


@pytest.mark.parametrize("amqp_url", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_that_cannot_reach_the_store_holds_up_the_intake_rather_than_letting_the_other_overtake_it(
        settings: Settings, receiver: WebhookReceiver) -> None:
    """The intake queue's active consumer loses its database mid-stream; the other worker must not take the
    case's later events in first (it stands by until the first worker recovers, or takes over in order)."""
    url = urlsplit(settings.database_url)
    proxy = CuttableProxy((url.hostname or "127.0.0.1", url.port or 5432))
    through_proxy = settings.model_copy(update={"database_url": url._replace(
        netloc=f"{url.username}@127.0.0.1:{proxy.port}").geturl()})
    first = Broker(through_proxy)
    first.migrate()
    first.start_relay()
    first.start_workers()  # the intake queue's active consumer: registered first
    assert first.wait_ready(30)
    second = Broker(settings)
    second.start_relay()
    second.start_workers()
    assert second.wait_ready(30)
    publisher = pika_connection()
    channel = publisher.channel()
    channel.confirm_delivery()
    exchange = first.topology.inbound_exchange.name
    as_crm = pika.BasicProperties(content_type="application/json", delivery_mode=2, user_id=AMQP_USER)
    try:
        cases = [f"CUT-{number:02d}" for number in range(10)]
        published: dict[str, list[str]] = {case_id: [] for case_id in cases}
        for case_id in cases:
            body = case_created(case_id)
            channel.basic_publish(exchange, "case.created", json.dumps(body).encode(), as_crm)
            published[case_id].append(body["event_id"])
        _wait(lambda: len(receiver.on("/highways")) == len(cases), "the cases at the target")
        proxy.cut()
        for case_id in cases:
            for body in events_of(case_id)[:3]:
                channel.basic_publish(exchange, body["event_type"], json.dumps(body).encode(), as_crm)
                published[case_id].append(body["event_id"])
        time.sleep(3)
        proxy.restore()
        _wait(lambda: len(receiver.on("/highways")) == len(cases) * 4, "every follow-up at the target", 90)
        arrived: dict[str, list[str]] = {case_id: [] for case_id in cases}
        for item in receiver.on("/highways"):
            arrived[item.body["event"]["case"]["case_id"]].append(item.body["event"]["event_id"])
        reordered = [case_id for case_id in cases if arrived[case_id] != published[case_id]]
        assert not reordered, f"{len(reordered)} case(s) out of publish order: {reordered}"
    finally:
        publisher.close()
        second.shutdown()
        first.shutdown()
        proxy.cut()


def _wait(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_follow_up_that_overtakes_its_case_is_held_then_taken_in_right_behind_it(
        running: RunningBroker, crm: Crm, receiver: WebhookReceiver) -> None:
    created, first, second = case_created("HELD-1"), status_changed("HELD-1", "in_progress"), \
        note_added("HELD-1", "Crew on site")
    publish(crm, first)
    publish(crm, second)
    running.wait_until(lambda: len(_held(running)) == 2, what="both follow-ups to be held")
    assert running.delivery_states() == {}
    publish(crm, created)  # over AMQP, as a portal might publish it on another connection
    running.wait_until(lambda: len(receiver.on("/highways")) == 3, what="the case and both follow-ups")
    assert [item.body["event"]["event_id"] for item in receiver.on("/highways")] == [
        created["event_id"], first["event_id"], second["event_id"]]
    assert _held(running) == []
    history = running.client.get("/v1/cases/HELD-1/history").json()["entries"]
    received = [entry for entry in history if entry["step"] == "received"]
    assert [("held_since" in entry["detail"]) for entry in received] == [False, True, True]


def test_a_follow_up_held_when_the_case_came_over_http_a_moment_before_goes_in_behind_it(
        running: RunningBroker, crm: Crm, receiver: WebhookReceiver) -> None:
    follow_up = status_changed("HELD-HTTP", "in_progress")
    publish(crm, follow_up)
    running.wait_until(lambda: len(_held(running)) == 1, what="the follow-up to be held")
    assert running.post_case(case_created("HELD-HTTP")).status_code == 202
    running.wait_until(lambda: len(receiver.on("/highways")) == 2, what="the case and its follow-up")
    assert receiver.on("/highways")[1].body["event"]["event_id"] == follow_up["event_id"]


@pytest.mark.parametrize("amqp_url", ["memory"], indirect=True)
def test_a_follow_up_whose_case_never_comes_is_failed_with_the_reason_and_joins_the_case_history_later(
        settings: Settings, receiver: WebhookReceiver) -> None:
    settings = settings.model_copy(update={"hold_unknown_case_seconds": 1.0})
    running = RunningBroker(settings)
    publisher = Crm(running)
    try:
        lonely = status_changed("NEVER-1", "in_progress")
        publish(publisher, lonely)
        running.wait_until(lambda: _failed(running), timeout=15, what="the hold to run out")
        [failed] = _failed(running)
        assert (failed.reason, failed.source, failed.case_ref) == ("rejected", "crm", "NEVER-1")
        assert "no case 'NEVER-1' from source 'crm' arrived within 1 s" in failed.error_text
        assert failed.raw_body and lonely["event_id"].encode() in failed.raw_body
        assert _held(running) == []

        assert running.post_case(case_created("NEVER-1")).status_code == 202
        history = running.client.get("/v1/cases/NEVER-1/history").json()["entries"]
        refused = [entry for entry in history if entry["step"] == "refused_before_case"]
        assert len(refused) == 1 and refused[0]["event_id"] == lonely["event_id"]
    finally:
        running.stop()


def _held(running: RunningBroker) -> list[HeldEvent]:
    with running.broker.store.read() as session:
        return list(session.scalars(select(HeldEvent)))


def _failed(running: RunningBroker) -> list[FailedMessage]:
    with running.broker.store.read() as session:
        return list(session.scalars(select(FailedMessage)))


def test_a_status_change_older_than_the_cases_latest_is_recorded_but_neither_applied_nor_sent(
        running: RunningBroker, receiver: WebhookReceiver) -> None:
    """A refused status change replayed after the case was closed must not reopen the case at its targets."""
    assert running.post_case(case_created("LATE-1")).status_code == 202
    late = status_changed("LATE-1", "in_progress")  # happened first, but arrives after the closure
    closed = status_changed("LATE-1", "fixed")
    closed["event_type"], closed["occurred_at"] = "case.closed", _later(late["occurred_at"])
    assert running.post_event("LATE-1", closed).status_code == 202
    assert running.post_event("LATE-1", late).status_code == 202
    running.wait_settled()
    assert [item.body["event"]["event_type"] for item in receiver.on("/highways")] == ["case.created",
                                                                                       "case.closed"]
    case = running.client.get("/v1/cases/LATE-1").json()
    assert case["status"] == "fixed"
    history = running.client.get("/v1/cases/LATE-1/history").json()["entries"]
    superseded = [entry for entry in history if entry["step"] == "superseded"]
    assert len(superseded) == 1 and superseded[0]["event_id"] == late["event_id"]


def _later(moment: str, seconds: float = 60) -> str:
    from datetime import datetime, timedelta

    return (datetime.fromisoformat(moment) + timedelta(seconds=seconds)).isoformat()
