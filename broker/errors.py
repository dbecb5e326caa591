"""One hierarchy of errors, so callers can catch by class (as with httpx)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


def clean_message(message: str) -> str:
    """Drop pydantic's "Value error, " prefix: a reader wants the sentence, not the exception class."""
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


class CasebridgeError(Exception):
    """Base class for every error Casebridge raises on purpose."""


class ConfigError(CasebridgeError):
    """Configuration, mappings or schedules are wrong; ``problems`` lists every one, with file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class Severity(StrEnum):
    #: The configuration is wrong: ``broker check`` fails, and the broker will not start on it.
    error = "error"
    #: It works, but not as safely as it could: ``broker check`` says so and still passes.
    warning = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration file (or, as a warning, one thing to look at)."""

    file: str
    line: int | None
    message: str
    severity: Severity = Severity.error

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        kind = "" if self.severity is Severity.error else f"{self.severity.value}: "
        return f"{where}: {kind}{self.message}"


class JobFailed(CasebridgeError):
    """A scheduled job did all it could, and part of it failed: ``summary`` holds what it did and what failed.

    Raised only once every part was tried (every target polled, every file looked at), so one failing part never
    stops the others; the run is then recorded as ``failed`` with this summary and ``error`` set to the message.
    """

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        self.message = message
        self.summary = summary
        super().__init__(message)


class IntakeRejected(CasebridgeError):
    """An inbound event is well-formed but cannot be accepted (e.g. an unknown service code)."""

    def __init__(self, field: str, message: str, *, status_code: int = 422) -> None:
        self.field = field
        self.message = message
        self.status_code = status_code
        super().__init__(f"{field}: {message}")


class DeliveryError(CasebridgeError):
    """A delivery to a target failed. Subclasses say whether trying again can help."""

    #: Machine-readable reason, e.g. ``http_404``, ``unmapped_service_code``, ``timeout``.
    reason: str

    def __init__(self, reason: str, message: str, *, response_excerpt: str | None = None) -> None:
        self.reason = reason
        self.message = message
        self.response_excerpt = response_excerpt
        super().__init__(f"{reason}: {message}")


class TransientDeliveryError(DeliveryError):
    """Trying again later may succeed: connection refused, timeout, HTTP 5xx or 429.

    ``may_have_landed`` says whether the failed call could still have taken effect at the target (a timeout
    after the request was sent, a connection dropped mid-answer, an HTTP 500). It is True unless the adapter knows
    better: a refused connection, a failed name lookup or a 503/429 answered before any work was done cannot have
    created anything, and the next attempt need not ask the target first.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retry_after: float | None = None,
        response_excerpt: str | None = None,
        may_have_landed: bool = True,
    ) -> None:
        super().__init__(reason, message, response_excerpt=response_excerpt)
        self.retry_after = retry_after
        self.may_have_landed = may_have_landed


class PermanentDeliveryError(DeliveryError):
    """Trying again cannot help until someone fixes the data or the mapping: HTTP 4xx, unmapped code."""


class DeliveryUnconfirmed(DeliveryError):
    """Raised by ``Adapter.find_delivered``: the target offers no look-up that can tell whether an earlier attempt
    of this delivery took effect (Confirm's ``GetEnquiry`` finds enquiries by number only).

    The delivery is not created again blindly: it waits as ``unconfirmed`` for the reconciliation job
    (``Adapter.reconcile``), and what that cannot resolve goes to support staff, who link it to the LOB record or
    create it anyway. A target may choose ``on_unconfirmed: recreate`` instead, knowingly.
    """


class SchemaOutOfDate(CasebridgeError):
    """The store's tables are missing or older than this release: ``broker db upgrade`` is to be run first."""
