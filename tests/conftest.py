"""Fixtures: every pipeline test runs on both transports and both stores, with real services.

``tests/unit`` needs no service and runs in a couple of minutes (``pytest tests/unit``); ``tests/integration``
runs against real RabbitMQ, PostgreSQL, OpenSSH's sshd and Chromium (``./scripts/test.sh`` starts them).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.harness import RunningBroker, write_mappings
from support.receiver import WebhookReceiver
from support.services import (
    AMQP_URL,
    POSTGRES_URL,
    delete_broker_namespace,
    postgres_database,
    reachable,
    sqlite_database,
)

from broker.settings import Settings

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Never skip the real services quietly: scripts/test.sh starts them; if the integration tests are to run and
    they are still missing, stop loudly. ``tests/unit`` needs none."""
    if not any(INTEGRATION in Path(str(item.path)).parents for item in session.items):
        return
    missing = [name for name, url, port in (("RabbitMQ", AMQP_URL, 5672), ("PostgreSQL", POSTGRES_URL, 5432))
               if not reachable(url, port)]
    if missing:
        pytest.exit(f"{' and '.join(missing)} not reachable; run the suite with scripts/test.sh", returncode=3)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store migrated to the newest schema (a copy of a template: quicker than migrating each time)."""
    if request.param == "sqlite":
        yield sqlite_database(tmp_path / "casebridge.db", migrated=True)
    else:
        with postgres_database(migrated=True) as url:
            yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store that was never migrated."""
    if request.param == "sqlite":
        yield sqlite_database(tmp_path / "casebridge.db")
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def namespace() -> str:
    return f"cbtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["memory", "rabbitmq"])
def amqp_url(request: pytest.FixtureRequest, namespace: str) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    yield AMQP_URL
    delete_broker_namespace(namespace)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    fake = WebhookReceiver()
    yield fake
    fake.close()


@pytest.fixture
def mappings_dir(tmp_path: Path, receiver: WebhookReceiver) -> Path:
    return write_mappings(tmp_path / "mappings", receiver.url)


@pytest.fixture
def settings(database_url: str, amqp_url: str, namespace: str, mappings_dir: Path, tmp_path: Path) -> Settings:
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    return Settings(
        database_url=database_url, amqp_url=amqp_url, amqp_namespace=namespace, mappings_dir=mappings_dir,
        schedules_dir=schedules, quick_retries=1, outbox_poll_seconds=0.2,
    )


@pytest.fixture
def running(settings: Settings) -> Iterator[RunningBroker]:
    broker = RunningBroker(settings)
    yield broker
    broker.stop()


@pytest.fixture
def broker_with(tmp_path: Path, namespace: str, mappings_dir: Path) -> Iterator[Callable[..., RunningBroker]]:
    """Starts a broker with settings of the test's own: the in-process transport and SQLite unless ``amqp_url`` or
    ``database_url`` say otherwise; each is stopped afterwards (and the namespace's queues deleted)."""
    started: list[RunningBroker] = []

    def start(**overrides: Any) -> RunningBroker:
        schedules = tmp_path / "schedules"
        schedules.mkdir(exist_ok=True)
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / f'casebridge-{len(started)}.db'}", "amqp_url": "memory://",
            "amqp_namespace": namespace, "mappings_dir": mappings_dir, "schedules_dir": schedules,
            "quick_retries": 1, "outbox_poll_seconds": 0.2, **overrides,
        }
        broker = RunningBroker(Settings(**values))
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()
    if any(broker.settings.uses_rabbitmq for broker in started):
        delete_broker_namespace(namespace)
