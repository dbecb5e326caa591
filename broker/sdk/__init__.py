"""The adapter SDK: everything an adapter for a LOB system needs, from one import, and nothing else.

What enters: a LOB system's documentation and an integration engineer. What leaves: an installable adapter package
(``broker adapter new <name>`` writes one) whose adapter subclasses :class:`Adapter`, declares its
:class:`Capability` set, and is proven by the contract kit (:mod:`broker.testing`). What it promises: these names
are stable; an adapter that imports only ``broker.sdk`` (and ``broker.testing`` in its tests) keeps working as the
core changes underneath.

.. code-block:: python

    from broker.sdk import Adapter, Capability, CaseCreated, DeliveryOutcome, DeliveryRequest, HttpClient, Settings

    class WasteConfig(Settings):
        url: str

    class WasteMapping(Settings):
        services: dict[str, str]

    class WasteAdapter(Adapter[WasteConfig, WasteMapping]):
        capabilities = frozenset({Capability.create})

        def deliver(self, request: DeliveryRequest) -> DeliveryOutcome: ...

See ``docs/adapters/writing-an-adapter.md``.
"""

from broker.errors import DeliveryError, DeliveryUnconfirmed, PermanentDeliveryError, TransientDeliveryError
from broker.logging import redact_url, redact_urls
from broker.model.case import (
    AnonymousReporter,
    Attachment,
    Case,
    CaseStatus,
    Channel,
    IdentifiedReporter,
    Location,
    Person,
    RepresentativeReporter,
)
from broker.model.events import (
    AnyEvent,
    CaseClosed,
    CaseCreated,
    CaseNoteAdded,
    CaseStatusChanged,
    CaseUpdated,
    EventType,
    utc_now,
)
from broker.plugins.contract import (
    EVENT_CAPABILITY,
    Adapter,
    AdapterConfigInvalid,
    AdapterMappingInvalid,
    Capability,
    DeliveryOutcome,
    DeliveryRequest,
    FieldProblems,
    LobStatusChange,
    NoMapping,
    Sandbox,
    Settings,
    field_problems,
)
from broker.sdk.http_client import (
    ConnectFailed,
    HttpClient,
    InvalidRequest,
    RequestNotSent,
    RequestTimedOut,
    Response,
    ResponseBroken,
    ResponseTooLarge,
    raise_for_status,
    retry_after_seconds,
)

#: Any canonical event: what :attr:`DeliveryRequest.event` holds.
CaseEvent = AnyEvent
#: The answer :class:`HttpClient` returns.
HttpResponse = Response

__all__ = [
    "EVENT_CAPABILITY",
    "Adapter",
    "AdapterConfigInvalid",
    "AdapterMappingInvalid",
    "AnonymousReporter",
    "AnyEvent",
    "Attachment",
    "Capability",
    "Case",
    "CaseClosed",
    "CaseCreated",
    "CaseEvent",
    "CaseNoteAdded",
    "CaseStatus",
    "CaseStatusChanged",
    "CaseUpdated",
    "Channel",
    "ConnectFailed",
    "DeliveryError",
    "DeliveryOutcome",
    "DeliveryRequest",
    "DeliveryUnconfirmed",
    "EventType",
    "FieldProblems",
    "HttpClient",
    "HttpResponse",
    "IdentifiedReporter",
    "InvalidRequest",
    "LobStatusChange",
    "Location",
    "NoMapping",
    "PermanentDeliveryError",
    "Person",
    "RepresentativeReporter",
    "RequestNotSent",
    "RequestTimedOut",
    "ResponseBroken",
    "ResponseTooLarge",
    "Sandbox",
    "Settings",
    "TransientDeliveryError",
    "field_problems",
    "raise_for_status",
    "redact_url",
    "redact_urls",
    "retry_after_seconds",
    "utc_now",
]
