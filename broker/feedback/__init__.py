"""Status changes coming back from LOB systems, as canonical ``case.status_changed`` events.

In: each poll-capable target's changes since its high-water mark, in overlapping windows. Out: at most one event
per change (its id derived from the change), taken in through :mod:`broker.intake` with the LOB system as its
source and routed to subscribers such as the CRM, never back to the system it came from. One target failing is
recorded against it; the others are polled all the same.
"""
