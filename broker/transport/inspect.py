"""Read-only looks at RabbitMQ for operators: how many messages wait in each queue."""

from __future__ import annotations

from broker.settings import Settings
from broker.transport.connection import connect, topology_for


def queue_depths(settings: Settings, targets: list[str]) -> dict[str, tuple[int, int]]:
    """Messages waiting and consumers per target queue ('' for intake); empty without RabbitMQ or if it is down."""
    if not settings.uses_rabbitmq:
        return {}
    topology = topology_for(settings)
    depths: dict[str, tuple[int, int]] = {}
    try:
        with connect(settings, confirm=False) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            for key, queue in [("", topology.inbound_queue), *((t, topology.delivery_queue(t)) for t in targets)]:
                try:
                    _, messages, consumers = queue(channel).queue_declare(passive=True)
                except Exception:  # the queue does not exist yet (no worker has started)
                    channel = connection.channel()
                    continue
                depths[key] = (messages, consumers)
    except Exception:
        return {}
    return depths
