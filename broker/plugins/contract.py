"""The contract between the core and an adapter plugin.

An adapter translates canonical events for one kind of LOB system. It is found through the
``casebridge.adapters`` entry point group, configured by its own pydantic model, and never imports the core's
internals: it receives a :class:`DeliveryRequest` and returns a :class:`DeliveryOutcome` or raises a
:class:`~broker.errors.DeliveryError` subclass that says whether trying again can help.
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import TypeVar

from broker.errors import CasebridgeError, clean_message
from broker.model.case import CaseStatus
from broker.model.events import AnyEvent, EventType


class Capability(StrEnum):
    #: Can take ``case.created``: see :data:`EVENT_CAPABILITY`.
    create = "create"
    #: Can take the follow-ups of a case it holds: ``case.updated``, ``case.note_added``, ``case.status_changed``,
    #: ``case.closed``.
    update = "update"
    poll_updates = "poll_updates"
    batch_export = "batch_export"
    batch_import = "batch_import"
    #: Can find what an earlier, unconfirmed attempt created (query-before-create): see Adapter.find_delivered.
    lookup = "lookup"
    #: Can search the target for deliveries whose outcome nobody could confirm: see Adapter.reconcile.
    reconcile = "reconcile"


#: What an adapter must declare to be sent each event type in real time (``broker check`` holds routes to it).
EVENT_CAPABILITY: dict[EventType, Capability] = {
    EventType.created: Capability.create,
    **{event_type: Capability.update for event_type in EventType if event_type is not EventType.created},
}


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
    #: When it happened; an estimate where the LOB system reports no times (the update id is what identifies it).
    occurred_at: datetime
    #: Text safe to show the resident, or None.
    notes: str | None = None


@dataclass(frozen=True)
class DeliveryOutcome:
    """What the target said: its reference for the case (if it gave one) and a short detail for the audit."""

    external_ref: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Settings(BaseModel):
    """A base for an adapter's settings and mapping models: an unknown key is an error, not a typo ignored."""

    model_config = ConfigDict(extra="forbid")


class NoMapping(Settings):
    """The mapping model of an adapter that takes no mapping file: an empty file, or none."""


ConfigT = TypeVar("ConfigT", bound=BaseModel)
MappingT = TypeVar("MappingT", bound=BaseModel, default=Any)
#: (path inside the file, message): what an adapter says is wrong; the core adds file and line.
FieldProblems = list[tuple[tuple[str | int, ...], str]]


def field_problems(error: ValidationError) -> FieldProblems:
    """A pydantic validation error as (path, message) pairs, one per field at fault."""
    return [(tuple(item["loc"]), clean_message(item["msg"])) for item in error.errors()]


class AdapterConfigInvalid(CasebridgeError):
    """A target's settings do not validate against its adapter's ``config_model``; ``errors`` has one
    (dotted path, message) pair per field at fault."""

    def __init__(self, target: str, error: ValidationError) -> None:
        self.errors = [(".".join(str(part) for part in path), message) for path, message in field_problems(error)]
        super().__init__(
            f"target {target!r}: " + "; ".join(f"settings.{loc}: {msg}" for loc, msg in self.errors)
        )


class AdapterMappingInvalid(CasebridgeError):
    """A target's mapping file does not validate against its adapter's ``mapping_model``; ``problems`` has one
    (path, message) pair per field at fault."""

    def __init__(self, target: str, problems: FieldProblems) -> None:
        self.problems = problems
        super().__init__(f"target {target!r}: mapping: " + "; ".join(
            f"{'.'.join(str(part) for part in path)}: {message}" for path, message in problems))


class Adapter(ABC, Generic[ConfigT, MappingT]):
    """Base class of every adapter: ``class MyAdapter(Adapter[MyConfig, MyMapping])``, with ``capabilities``.

    The two models are read from the class's generic arguments (or set as ``config_model`` and ``mapping_model``),
    and validated here, once: ``self.config`` is a ``ConfigT`` and ``self.mapping`` a ``MappingT``, whether the
    adapter was given them built or as the dictionaries read from ``routes.yaml`` and the mapping file. Invalid
    settings raise :class:`AdapterConfigInvalid`, an invalid mapping :class:`AdapterMappingInvalid`, each naming
    every field at fault (what ``broker check`` reports with file and line).

    **Threads.** One adapter instance serves its target for the life of the process, and is shared: the target's
    delivery consumer calls :meth:`deliver` and :meth:`find_delivered` while the scheduler's thread calls
    :meth:`status_changes` and :meth:`reconcile`, and a process may run several consumers. Every method must be
    safe to call from several threads at once (the SDK's ``HttpClient`` is). :meth:`close` may be called more
    than once.
    """

    config_model: ClassVar[type[BaseModel]]
    mapping_model: ClassVar[type[BaseModel]] = NoMapping
    capabilities: ClassVar[frozenset[Capability]]

    config: ConfigT
    mapping: MappingT

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if not (isinstance(origin, type) and issubclass(origin, Adapter)):
                continue
            models = [arg for arg in typing.get_args(base) if isinstance(arg, type) and issubclass(arg, BaseModel)]
            for name, model in zip(("config_model", "mapping_model"), models, strict=False):
                if name not in cls.__dict__ and model is not BaseModel:
                    setattr(cls, name, model)

    def __init__(self, target: str, config: ConfigT | Mapping[str, Any],
                 mapping: MappingT | Mapping[str, Any] | None = None) -> None:
        self.target = target
        self.config = self.validate_config(target, config)
        self.mapping = self.validate_mapping(target, {} if mapping is None else mapping)

    @classmethod
    def validate_config(cls, target: str, config: Any) -> Any:
        """The settings as ``config_model``; raises AdapterConfigInvalid naming every field at fault."""
        if isinstance(config, cls.config_model):
            return config
        try:
            return cls.config_model.model_validate(config)
        except ValidationError as exc:
            raise AdapterConfigInvalid(target, exc) from exc

    @classmethod
    def validate_mapping(cls, target: str, mapping: Any) -> Any:
        """The mapping as ``mapping_model``; raises AdapterMappingInvalid naming every field at fault."""
        if isinstance(mapping, cls.mapping_model):
            return mapping
        try:
            return cls.mapping_model.model_validate(mapping)
        except ValidationError as exc:
            raise AdapterMappingInvalid(target, field_problems(exc)) from exc

    @classmethod
    def mapping_problems(cls, mapping: dict[str, Any]) -> FieldProblems:
        """Problems in this adapter's mapping file, as (path, message); the core adds file and line. By default,
        what ``mapping_model`` refuses; an adapter may add checks of its own (calling this first)."""
        try:
            cls.mapping_model.model_validate(mapping)
        except ValidationError as exc:
            return field_problems(exc)
        return []

    @classmethod
    def realtime_warnings(cls, target: str, settings: dict[str, Any]) -> list[str]:
        """What an operator should know before sending this target real-time deliveries with these settings,
        shown by ``broker check`` as warnings (the configuration works, but ...)."""
        return []

    @classmethod
    def unknown_code_problems(cls, mapping: dict[str, Any], lookups: dict[str, Any]) -> FieldProblems:
        """Codes in the mapping file that the LOB system does not know, judged by a saved copy of its lookups
        (``<target>.lookups.yaml`` beside the mapping). Adapters whose LOB system lists its codes override this."""
        return []

    @abstractmethod
    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        """Deliver one event; raise TransientDeliveryError or PermanentDeliveryError on failure."""

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """Whether an earlier attempt of this very delivery already took effect at the target.

        Called before any attempt that follows one which may have landed -- of a create or of a follow-up: a
        timeout, a worker that stopped between calling the target and recording the outcome, a take-over, a replay.
        Adapters with ``Capability.lookup`` ask the target (by our reference or the event id); return the outcome to
        record instead of delivering again, or None to deliver -- only when the answer is authoritative (a search by our
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
        """Release connections and sessions; safe to call twice."""


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
