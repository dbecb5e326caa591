"""Failed messages: what could not be taken in or delivered, and what support staff do about it.

In: refusals from intake, deliveries that failed or could not be confirmed, poison messages. Out: the failed
message store, queried the same way by the CLI and the console (:mod:`broker.failures.queries`), grouped by cause,
and the actions on it -- replay, correct and replay, link to a LOB record, create anyway, discard -- each written
to the case's history with who did it.
"""
