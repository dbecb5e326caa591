"""Delivery: from a queued pointer to a recorded outcome at one target (relay -> queue -> worker -> adapter).

In: delivery pointers from the target's queue (:mod:`broker.delivery.pointer`; written by intake, retries and
replays, published by the outbox relay in :mod:`broker.transport`). Out: the adapter's call to the LOB system, and
``delivered``, ``retrying``, ``unconfirmed`` or ``failed`` recorded in the store before the message is acked.
Promises: a case's events reach each target in order; an attempt is counted as it starts and, if it may have
landed, every later attempt asks the target first (a target that cannot tell holds it for reconciliation); a
failing target is paused by its circuit; a worker that dies is taken over only once its heartbeat is stale.
"""
