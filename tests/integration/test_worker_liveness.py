"""A delivery in flight belongs to its worker while that worker lives, even if the queue hands its pointer out again.

RabbitMQ redelivers a message as soon as the connection of the consumer holding it drops, though that consumer may
still be inside a slow call to the target. The second worker must not call the target then (its lookup could run
before the first call lands, and the case would be created twice); it waits until the first worker has recorded
the outcome, or its heartbeat has gone stale because it really is gone.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy import create_engine, select, update
from support.deployment import Deployment
from support.envelopes import case_created
from support.harness import RunningBroker
from support.processes import BrokerProcess
from support.proxy import CuttableProxy
from support.receiver import Answer, WebhookReceiver
from support.services import AMQP_URL, delete_broker_namespace, postgres_database

from broker.delivery.worker import DeliveryWorker
from broker.model.events import utc_now
from broker.store import claims, workers
from broker.store.tables import AuditEntry, DeliveryRecord, WorkerHeartbeat


def claimed_by_another_worker(running: RunningBroker, case_id: str) -> tuple[int, str]:
    """Post a case with the broker's own consumers stopped and claim its delivery as worker ``first``."""
    running.broker.shutdown()  # no consumers: this test plays the workers itself
    running.post_case(case_created(case_id))
    store = running.broker.store
    with store.read() as session:
        delivery_id = session.scalars(select(DeliveryRecord.id)).one()
    pending = claims.load_pending(store, delivery_id)
    assert pending is not None
    workers.beat(store, "first")
    assert claims.claim(store, pending, worker_id="first") is claims.Claim.go
    return delivery_id, "first"


def test_a_redelivered_pointer_waits_while_the_worker_holding_it_lives(running: RunningBroker,
                                                                       receiver: WebhookReceiver) -> None:
    store = running.broker.store
    delivery_id, first = claimed_by_another_worker(running, "LIVE-1")
    second = DeliveryWorker(store, running.broker_adapters(), worker_id="second")

    assert second.handle(delivery_id, redelivered=True) == "deferred"
    assert receiver.on("/highways") == [] and receiver.lookups == 0  # the target was not even asked

    holder = DeliveryWorker(store, running.broker_adapters(), worker_id=first)
    assert holder.handle(delivery_id, redelivered=True) == "delivered"  # its own claim: it resumes at once
    assert second.handle(delivery_id, redelivered=True) == "skipped"
    assert len(receiver.on("/highways")) == 1


def test_a_delivery_held_by_a_worker_whose_heartbeat_is_stale_is_resumed(running: RunningBroker,
                                                                         receiver: WebhookReceiver) -> None:
    store = running.broker.store
    delivery_id, first = claimed_by_another_worker(running, "LIVE-2")
    with store.transaction() as session:  # the first worker died: its heartbeat stopped
        session.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == first)
                        .values(beat_at=utc_now() - workers.STALE_AFTER - timedelta(seconds=1)))
    second = DeliveryWorker(store, running.broker_adapters(), worker_id="second")

    assert second.handle(delivery_id) == "skipped"  # a plain copy of the pointer is never a takeover
    assert second.handle(delivery_id, redelivered=True) == "delivered"
    assert receiver.lookups == 1 and len(receiver.on("/highways")) == 1  # asked the target first
    with store.read() as session:
        assert session.get_one(DeliveryRecord, delivery_id).claimed_by == "second"


def test_a_worker_beats_while_it_runs_and_says_goodbye_when_it_stops(running: RunningBroker) -> None:
    store, worker_id = running.broker.store, running.broker.worker_id
    with store.read() as session:
        first_beat = session.get_one(WorkerHeartbeat, worker_id).beat_at
    time.sleep(workers.BEAT_SECONDS + 1)
    with store.read() as session:
        assert session.get_one(WorkerHeartbeat, worker_id).beat_at > first_beat
    running.broker.shutdown()
    with store.read() as session:
        assert session.get(WorkerHeartbeat, worker_id) is None


def test_connection_lost_during_a_slow_call_creates_the_case_once(tmp_path: Path, receiver: WebhookReceiver) -> None:
    """Worker A reaches RabbitMQ through a proxy that is cut while A waits on a slow target; worker B gets the
    pointer again at once. The target records the case only as it answers, so a lookup by B would find nothing."""
    namespace = f"cblive-{uuid.uuid4().hex[:8]}"
    upstream = urlparse(AMQP_URL)
    proxy = CuttableProxy((upstream.hostname or "127.0.0.1", upstream.port or 5672))
    via_proxy = upstream._replace(netloc=f"{upstream.username}:{upstream.password}@127.0.0.1:{proxy.port}").geturl()
    processes: list[BrokerProcess] = []
    try:
        with postgres_database() as database_url:
            deployment = Deployment(tmp_path, receiver, database_url, namespace, workers=0, timeout_seconds=30)
            worker_a = BrokerProcess("worker", env={**deployment.env, "CASEBRIDGE_AMQP_URL": via_proxy},
                                     cwd=tmp_path, name="worker-a")
            processes.append(worker_a)
            worker_a.wait_for_output('"consumer.started"')
            receiver.answer("/highways", Answer(201, delay=8, lands_when_answered=True))
            envelope = case_created("LIVE-CUT")
            deployment.publish([envelope])
            receiver.wait_for(1, "/highways")  # A is inside the slow call

            worker_b = BrokerProcess("worker", env=deployment.env, cwd=tmp_path, name="worker-b")
            processes.append(worker_b)
            worker_b.wait_for_output('"consumer.started"')
            proxy.cut()  # A's AMQP connections drop; RabbitMQ gives the pointer to B
            worker_b.wait_for_output('"delivery.deferred"', timeout=20)

            deployment.wait_until(lambda: deployment.states() == {"delivered": 1}, 60, "the delivery")
            time.sleep(2)  # B looks again once more after the outcome: it must skip, not call
            assert len(receiver.on("/highways")) == 1
            assert receiver.lookups == 0
            assert receiver.event_counts("/highways") == {envelope["event_id"]: 1}
            steps = deployment_steps(database_url)
            assert steps.count("delivered") == 1, steps
            assert '"delivery.delivered"' in worker_a.output()  # the worker that made the call recorded it
            assert '"delivery.delivered"' not in worker_b.output()
    finally:
        proxy.cut()
        for process in processes:
            process.kill()
        delete_broker_namespace(namespace)


def deployment_steps(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(select(AuditEntry.step).order_by(AuditEntry.id)))
    finally:
        engine.dispose()


def test_a_worker_handed_its_own_abandoned_claim_again_resumes_it(running: RunningBroker,
                                                                  receiver: WebhookReceiver) -> None:
    """Handling a window failed after the claims (say the store went away) and the consumer retries it pointer by
    pointer: the pointers are not redeliveries, but the claims are this worker's own and nobody else is on them."""
    store = running.broker.store
    delivery_id, first = claimed_by_another_worker(running, "LIVE-3")
    stranger = DeliveryWorker(store, running.broker_adapters(), worker_id="stranger")
    assert stranger.handle(delivery_id) == "skipped"

    same_worker = DeliveryWorker(store, running.broker_adapters(), worker_id=first)
    assert same_worker.handle(delivery_id) == "delivered"
    assert receiver.lookups == 1 and len(receiver.on("/highways")) == 1
