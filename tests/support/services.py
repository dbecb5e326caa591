"""The real RabbitMQ and PostgreSQL the suite runs against (started by scripts/test.sh where missing)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pika
import psycopg

AMQP_URL = os.environ.get("CASEBRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: The account the suite publishes as: the broker's own, which may publish as any system.
AMQP_USER = urlparse(AMQP_URL).username or "guest"
POSTGRES_URL = os.environ.get("CASEBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=3):
            return True
    except OSError:
        return False


def _postgres_url(name: str) -> str:
    return urlparse(POSTGRES_URL)._replace(scheme="postgresql+psycopg", path=f"/{name}").geturl()


def _migrations_digest() -> str:
    """Names the migrated templates: a new or changed migration makes new ones."""
    from broker.store import database

    digest = hashlib.sha256()
    for path in sorted((Path(database.__file__).parent / "migrations").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@cache
def _postgres_template() -> str:
    """A database migrated to the newest schema, made once (per migrations, across runs): each test's database is a
    copy of it, which takes a fraction of running the migrations again."""
    from broker.store.database import upgrade

    name = f"cb_template_{_migrations_digest()}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return name
        building = f"{name}_{uuid.uuid4().hex[:6]}"
        admin.execute(f'CREATE DATABASE "{building}"')
    upgrade(_postgres_url(building))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        try:  # another run may have made it meanwhile: then its copy serves, and this one goes
            admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        except psycopg.errors.DuplicateDatabase:
            admin.execute(f'DROP DATABASE "{building}" WITH (FORCE)')
    return name


@contextmanager
def postgres_database(*, migrated: bool = False) -> Iterator[str]:
    """A new PostgreSQL database for one test, empty or ``migrated`` to the newest schema; dropped afterwards."""
    name = f"cb_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_postgres_template()}"' if migrated else ""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{template}')
    try:
        yield _postgres_url(name)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@cache
def _sqlite_template() -> Path:
    from broker.store.database import upgrade

    folder = Path(tempfile.mkdtemp(prefix="casebridge-template-"))
    upgrade(f"sqlite:///{folder / 'template.db'}")
    return folder / "template.db"


def sqlite_database(path: Path, *, migrated: bool = False) -> str:
    """A SQLite store at ``path``: a copy of a migrated one if ``migrated``, else nothing yet (an empty store)."""
    if migrated:
        shutil.copyfile(_sqlite_template(), path)
    return f"sqlite:///{path}"


def pika_connection() -> pika.BlockingConnection:
    # kombu writes the default virtual host as a trailing "//"; pika wants it URL-encoded.
    url = AMQP_URL[:-1] + "%2F" if AMQP_URL.endswith("//") else AMQP_URL
    return pika.BlockingConnection(pika.URLParameters(url))


def delete_rabbitmq_namespace(namespace: str, queues: list[str], exchanges: list[str]) -> None:
    """Remove a test's queues and exchanges so runs never see each other's messages."""
    connection = pika_connection()
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


def delete_broker_namespace(namespace: str,
                            targets: tuple[str, ...] = ("highways", "environment", "crm", "waste", "confirm")) -> None:
    """Remove the intake queue, the targets' delivery queues and both exchanges of a test's namespace."""
    from broker.transport.topology import Topology

    topology = Topology(namespace)
    delete_rabbitmq_namespace(
        namespace,
        [topology.inbound_queue.name, topology.dead_letter_queue.name,
         *(topology.delivery_queue(target).name for target in targets)],
        [topology.inbound_exchange.name, topology.delivery_exchange.name, topology.dead_letter_exchange.name],
    )
