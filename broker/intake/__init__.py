"""Intake: every event, from any channel, validated, deduplicated, ordered, routed and recorded in one transaction.

In: canonical envelopes from HTTP (:mod:`broker.api`), AMQP (:mod:`broker.transport.inbound`), batch imports and
LOB polls. Out: a receipt (the original one for a duplicate) or a refusal naming the field at fault; in the store,
the case, the event, its audit steps, one delivery per routed target and their pointers -- all or nothing.
Promises: recorded before it is acknowledged; a case's events in the order the sender published them (a follow-up
that arrives before its case is held back, not refused); a late status change never undoes a later one.
"""
