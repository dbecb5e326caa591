"""Canonical statuses and Open311's, both ways, in one place.

The canonical statuses are FixMyStreet's extended ones, so most map one to one. What needs deciding:

- the spec's own two (``open``/``closed``, in ``GET requests``): closed are the ways a case ends
  (:data:`~broker.model.events.CLOSING_STATUSES`) and an internal referral (the council passed it on, as
  FixMyStreet also counts it);
- the extra words FixMyStreet may send with a resident's update: ``REOPEN``, ``FOR_TRIAGE``, ``PLANNED``,
  ``CANCELLED``, and ``UNCHANGED`` (nothing to change);
- a client without extended statuses sends only ``OPEN`` or ``CLOSED`` with every comment: that says which of the
  two the case is in, not that it should go back to plain ``open`` -- so a case already open stays as it is.
"""

from __future__ import annotations

from broker.model.case import CaseStatus
from broker.model.events import CLOSING_STATUSES

#: Counted as ``closed`` where the spec has only open and closed.
CLOSED = frozenset({*CLOSING_STATUSES, CaseStatus.internal_referral})

#: What a resident's update may say, as FixMyStreet spells it (any case; spaces for underscores are read too).
_SENT: dict[str, CaseStatus | None] = {
    **{status.value.upper(): status for status in CaseStatus},
    "REOPEN": CaseStatus.open,
    "FOR_TRIAGE": CaseStatus.open,
    "PLANNED": CaseStatus.action_scheduled,
    "CANCELLED": CaseStatus.closed,
    "UNCHANGED": None,
}

#: The words accepted in a resident's update, for error messages.
ACCEPTED = tuple(_SENT)


def spec_status(status: CaseStatus) -> str:
    """The spec's ``open`` or ``closed``."""
    return "closed" if status in CLOSED else "open"


def update_status(status: CaseStatus) -> str:
    """FixMyStreet's extended status of an update, upper case: ``FIXED``, ``NOT_COUNCILS_RESPONSIBILITY``."""
    return status.value.upper()


def read_sent(word: str) -> tuple[bool, CaseStatus | None]:
    """(known, status) for a status word a client sent; status None for ``UNCHANGED``."""
    key = word.strip().upper().replace(" ", "_")
    return key in _SENT, _SENT.get(key)


def after_resident_update(word: str, current: CaseStatus) -> CaseStatus | None:
    """The status a resident's update moves the case to, or None when it leaves the status as it is."""
    known, sent = read_sent(word)
    if not known or sent is None or sent == current:
        return None
    key = word.strip().upper().replace(" ", "_")
    if key == "OPEN" and current not in CLOSED:
        return None  # still open: the word says which of the two, not which open status
    if key == "CLOSED" and current in CLOSED:
        return None
    return sent


def spec_statuses(words: str) -> set[str] | None:
    """The ``status`` filter of ``GET requests`` (comma list of open, closed); None if a word is neither."""
    wanted = {word.strip().lower() for word in words.split(",") if word.strip()}
    return wanted if wanted <= {"open", "closed"} else None
