"""The message fabric: RabbitMQ through kombu, or the in-process transport; nothing else imports kombu.

In: committed outbox rows (the relay publishes them to each target's delivery queue) and canonical envelopes
published to ``<namespace>.inbound`` (handed to :mod:`broker.intake`). Out: messages consumed with manual acks,
only after their outcome is recorded; poison messages recorded instead of looped on. The topology (exchange and
queue names and arguments) lives here alone.
"""
