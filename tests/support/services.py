"""The real RabbitMQ and PostgreSQL the suite runs against (started by scripts/test.sh where missing)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"cb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(POSTGRES_URL)
    url = parsed._replace(scheme="postgresql+psycopg", path=f"/{name}").geturl()
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
