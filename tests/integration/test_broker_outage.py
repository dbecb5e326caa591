"""RabbitMQ unreachable: the HTTP API keeps accepting cases; the outbox relays them once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import func, select
from support.envelopes import case_created
from support.harness import RunningBroker
from support.proxy import CuttableProxy
from support.receiver import WebhookReceiver
from support.services import AMQP_URL, delete_broker_namespace, postgres_database

from broker.settings import Settings
from broker.store.tables import OutboxMessage


@pytest.fixture
def behind_proxy(tmp_path: Path, mappings_dir: Path, namespace: str) -> Iterator[tuple[Settings, CuttableProxy]]:
    upstream = urlparse(AMQP_URL)
    proxy = CuttableProxy((upstream.hostname or "127.0.0.1", upstream.port or 5672))
    url = upstream._replace(netloc=f"{upstream.username}:{upstream.password}@127.0.0.1:{proxy.port}").geturl()
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    with postgres_database() as database_url:
        yield Settings(database_url=database_url, amqp_url=url, amqp_namespace=namespace,
                       mappings_dir=mappings_dir, schedules_dir=schedules, quick_retries=1,
                       outbox_poll_seconds=0.2), proxy
        proxy.cut()
    delete_broker_namespace(namespace)


def test_cases_are_accepted_while_rabbitmq_is_unreachable(behind_proxy: tuple[Settings, CuttableProxy],
                                                          receiver: WebhookReceiver) -> None:
    settings, proxy = behind_proxy
    running = RunningBroker(settings)
    try:
        assert running.post_case(case_created("OUT-00")).status_code == 202
        assert running.wait_settled() == {"delivered": 1}

        proxy.cut()
        started = time.monotonic()
        for n in range(1, 21):
            assert running.post_case(case_created(f"OUT-{n:02d}")).status_code == 202
        assert time.monotonic() - started < 10  # accepting does not wait for RabbitMQ
        time.sleep(1)
        with running.broker.store.read() as session:
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 20
        assert running.delivery_states() == {"delivered": 1, "pending": 20}

        proxy.restore()
        assert running.wait_settled(timeout=90) == {"delivered": 21}
        assert set(receiver.event_counts("/highways").values()) == {1}
        assert len(receiver.event_counts("/highways")) == 21
    finally:
        running.stop()
