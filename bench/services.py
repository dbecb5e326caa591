"""The RabbitMQ and PostgreSQL the benchmarks run against: how pika reaches them, which versions they are, and
emptying a benchmark's namespace afterwards."""

from __future__ import annotations

import pika
import psycopg


def pika_parameters(url: str) -> pika.URLParameters:
    return pika.URLParameters(url[:-1] + "%2F" if url.endswith("//") else url)


def rabbitmq_version(url: str) -> str:
    connection = pika.BlockingConnection(pika_parameters(url))
    try:
        version = connection._impl.server_properties.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        connection.close()


def postgres_version(url: str) -> str:
    with psycopg.connect(url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"


def delete_namespace(amqp_url: str, namespace: str, targets: tuple[str, ...] = ("highways",)) -> None:
    """The queues and exchanges a benchmark's broker declared under ``namespace``."""
    connection = pika.BlockingConnection(pika_parameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in (f"{namespace}.intake", *(f"{namespace}.deliver.{target}" for target in targets)):
            channel.queue_delete(queue)
        for exchange in (f"{namespace}.inbound", f"{namespace}.deliver"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()
