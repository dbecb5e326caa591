"""The cyclic garbage collector, tuned for a long-running broker process.

After start-up a worker holds well over a hundred thousand long-lived objects (modules, pydantic models,
SQLAlchemy metadata, adapters), and CPython's defaults (a young collection every 700 net allocations, older
collections walking every tracked object) spent about a tenth of a worker's CPU per case scanning them again and
again. Frozen, the start-up objects are never scanned; and since a case's short-lived objects are nearly all
freed by reference counting as soon as the case is done, young collections can be far rarer.
"""

from __future__ import annotations

import gc

#: Net allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD = 20_000
#: Young collections per middle one, and middle ones per full one (CPython's default is 10 and 10).
OLDER_THRESHOLD = 20


def settle_after_start() -> None:
    """Call once the process has loaded everything it keeps for its lifetime, before it takes work."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
