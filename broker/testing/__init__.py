"""The adapter contract kit: suites an adapter's tests subclass to prove the adapter against its LOB system.

What enters: an adapter class, how to start its sandbox (or reach a real LOB test system with ``--real``), its
settings and mapping. What leaves: pytest tests, run through a fault-injecting proxy, that fail when the adapter
breaks a promise the core relies on: one record for an event delivered twice (query-before-create), errors
classified (timeouts, dropped connections, 5xx and 429 transient with ``Retry-After`` honoured; 4xx and in-band
refusals permanent, readably), status changes never repeated, settings and mapping refused per field by
``broker check``, golden files byte for byte, ``close()`` twice, threads. What it promises: a declared capability is
proven by its suite or carries a written reason (``bypass_reasons``). Installed as a pytest plugin (``--real``,
``--update-golden``). See ``docs/adapters/writing-an-adapter.md``.
"""

from broker.testing.contract import (
    AdapterContract,
    CapabilitySuite,
    CoreContract,
    CreateContract,
    Inspectable,
    Lob,
    LookupContract,
    PollContract,
    ReconcileContract,
    UpdateContract,
    adapter_registered,
    canonical_json,
    describe,
)
from broker.testing.events import case_created, note_added, status_changed
from broker.testing.proxy import Exchange, FaultProxy, RawAnswer

__all__ = [
    "AdapterContract",
    "CapabilitySuite",
    "CoreContract",
    "CreateContract",
    "Exchange",
    "FaultProxy",
    "Inspectable",
    "Lob",
    "LookupContract",
    "PollContract",
    "RawAnswer",
    "ReconcileContract",
    "UpdateContract",
    "adapter_registered",
    "canonical_json",
    "case_created",
    "describe",
    "note_added",
    "status_changed",
]
