"""The contract between the core and an adapter plugin.

An adapter translates canonical events for one kind of LOB system. It is found through the
``casebridge.adapters`` entry point group, configured by its own pydantic model, and never imports the core's
internals: it receives a :class:`DeliveryRequest` and returns a :class:`DeliveryOutcome` or raises a
:class:`~broker.errors.DeliveryError` subclass that says whether trying again can help.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from broker.model.case import CaseStatus
from broker.model.events import AnyEvent


class Capability(StrEnum):
    create = "create"
    update = "update"
    poll_updates = "poll_updates"
    batch_export = "batch_export"
    batch_import = "batch_import"
    #: Can find what an earlier, unconfirmed attempt created (query-before-create): see Adapter.find_delivered.
    lookup = "lookup"
    #: Can search the target for deliveries whose outcome nobody could confirm: see Adapter.reconcile.
    reconcile = "reconcile"


@dataclass(frozen=True)
class DeliveryRequest:
    """One event to deliver to one target."""

    target: str
    event: AnyEvent
    #: Our stable reference for the case, given to the LOB system so the case can be found again.
    our_reference: str
    #: The LOB system's reference for this case, once an earlier delivery created it there.
    external_ref: str | None
    attempt: int
    #: When the first attempt of this delivery started (None before the first): a record an earlier attempt
    #: made at the target is no older than this.
    first_attempt_at: datetime | None = None


@dataclass(frozen=True)
class LobStatusChange:
    """A status change made in the LOB system, to become a canonical ``case.status_changed`` event."""

    #: The LOB system's reference for the case (what a delivery recorded as the external reference).
    reference: str
    #: Unique and stable for this change, so repeated or overlapping polls never report it twice.
    update_id: str
    status: CaseStatus
    external_status_code: str
    occurred_at: datetime
    #: Text safe to show the resident, or None.
    notes: str | None = None


@dataclass(frozen=True)
class DeliveryOutcome:
    """What the target said: its reference for the case (if it gave one) and a short detail for the audit."""

    external_ref: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Adapter(ABC, Generic[ConfigT]):
    """Base class of every adapter. Subclasses set ``config_model`` and ``capabilities``."""

    config_model: ClassVar[type[BaseModel]]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(self, target: str, config: ConfigT, mapping: dict[str, Any]) -> None:
        self.target = target
        self.config = config
        self.mapping = mapping

    @classmethod
    def mapping_problems(cls, mapping: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems in this adapter's mapping file, as (path, message); the core adds file and line."""
        return []

    @classmethod
    def realtime_warnings(cls, target: str, settings: dict[str, Any]) -> list[str]:
        """What an operator should know before sending this target real-time deliveries with these settings,
        shown by ``broker check`` as warnings (the configuration works, but ...)."""
        return []

    @classmethod
    def unknown_code_problems(cls, mapping: dict[str, Any],
                              lookups: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Codes in the mapping file that the LOB system does not know, judged by a saved copy of its lookups
        (``<target>.lookups.yaml`` beside the mapping). Adapters whose LOB system lists its codes override this."""
        return []

    @abstractmethod
    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        """Deliver one event; raise TransientDeliveryError or PermanentDeliveryError on failure."""

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """Whether an earlier attempt of this very delivery already took effect at the target.

        Called before any attempt that follows one which may have landed: a timeout, a worker that stopped
        between calling the target and recording the outcome, a take-over, a replay. Adapters with
        ``Capability.lookup`` ask the target (by our reference or the event id); return the outcome to record
        instead of delivering again, or None to deliver -- only when the answer is authoritative (a search by our
        reference that found nothing). Raise :class:`~broker.errors.DeliveryUnconfirmed` when the target offers
        no look-up that can tell, and TransientDeliveryError when the look-up failed: the core never creates
        again on a look-up it could not do.
        """
        return None

    def reconcile(self, unconfirmed: Sequence[DeliveryRequest]) -> dict[str, DeliveryOutcome]:
        """Search the target for records made by these deliveries (``Capability.reconcile``).

        ``unconfirmed`` are creates (``case.created``) whose ``first_attempt_at`` is set. Returns the outcome to
        record for each one found, keyed by ``our_reference``; one absent from the answer was searched for, over
        the whole time since its ``first_attempt_at`` (and its event's ``occurred_at``), and not found. Raise
        TransientDeliveryError when the search itself could not be done: the core tries again later and
        concludes nothing. Confirm, for example, lists the enquiries logged since the earliest attempt
        (``GetEnquiryStatusChanges``) and reads them ten at a time (``GetEnquiry``), matching our reference.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot reconcile unconfirmed deliveries")

    def status_changes(self, since: datetime, until: datetime) -> list[LobStatusChange]:
        """Status changes made in the LOB system in [since, until] (``Capability.poll_updates``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot report status changes")

    def close(self) -> None:
        """Release connections and sessions."""


class Sandbox(ABC):
    """A stand-in for a LOB system, shipped with its adapter (entry point group ``casebridge.sandboxes``, under the
    adapter's name): ``broker run --demo`` starts one for every adapter that offers it, points the shipped routes
    at it, and lets its simulated officer move records on so that their progress comes back.

    It is a feature, not a test double: an integration engineer can point a CRM at it.
    """

    #: What it plays, for people: ``Confirm simulator``.
    title: ClassVar[str]
    #: The port it listens on unless told otherwise (``--demo-port <adapter>=<port>``; 0 picks a free one).
    default_port: ClassVar[int]

    @abstractmethod
    def start(self, host: str, port: int) -> None:
        """Listen; raise OSError if the port is taken."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where it listens."""

    @abstractmethod
    def environment(self) -> dict[str, str]:
        """The variables the shipped routes read for this system (its URL, a password), for the demo to set where
        the environment does not already name them."""

    def continue_after(self, references: Sequence[str]) -> None:
        """Number new records after these (the references the store already holds for this adapter's targets): a
        demo run again on the same store must not give a new case an old case's number."""
        return None  # a sandbox whose records need no numbering of ours

    def officer_moves(self) -> list[str]:
        """Move the records on as an officer would, a step each time it is called (every ten seconds); returns a
        line for people about each move."""
        return []

    @abstractmethod
    def close(self) -> None:
        """Stop listening."""
