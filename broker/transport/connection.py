"""kombu connections: RabbitMQ with publisher confirms and heartbeats, or the in-process memory transport."""

from __future__ import annotations

from kombu.connection import Connection

from broker.settings import Settings
from broker.transport.topology import Topology


def connect(settings: Settings, *, confirm: bool = True) -> Connection:
    """A new (lazy) connection. Publishes on a confirming connection block until the broker has the message."""
    if not settings.uses_rabbitmq:
        return Connection(settings.amqp_url, transport_options={"polling_interval": 0.005})
    return Connection(
        settings.amqp_url,
        heartbeat=30,
        connect_timeout=10,
        transport_options={"confirm_publish": confirm, "max_retries": 0},
    )


def topology_for(settings: Settings) -> Topology:
    # Quorum queues are RabbitMQ's replicated, durable queue type; the memory transport has no such notion.
    return Topology(namespace=settings.amqp_namespace, quorum=settings.uses_rabbitmq)


def is_broker_unreachable(error: BaseException) -> bool:
    """RabbitMQ could not be reached (refused, timed out, gone): a fact about the deployment, not a bug."""
    from kombu.exceptions import OperationalError

    return isinstance(error, OperationalError | ConnectionError)
