"""Console accounts, roles, sign-in slowed down per source address, and server-side sessions.

Passwords are hashed with argon2; a session cookie carries a random token whose SHA-256 is the session's key, so
a copy of the database does not give anyone a live session.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, select

from broker.console.roles import ROLES
from broker.errors import CasebridgeError
from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.tables import AuditEntry, ConsoleSession, ConsoleUser, SignInFailure

#: What each role may do, cumulatively: an admin can do everything an operator can.
_RANK = {role: rank for rank, role in enumerate(ROLES)}
SESSION_HOURS = 8
#: Refused sign-ins allowed from one address in the window before further tries from it are refused (settings
#: console_sign_in_failures and console_sign_in_window_seconds). Accounts are never locked: anyone could lock
#: anyone out, an administrator included, by failing to sign in as them.
MAX_FAILURES = 10
FAILURE_WINDOW = timedelta(minutes=15)

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so an unknown name takes as long as a wrong password.
    Made on first use, not at import: hashing takes a good part of a second, which every command would pay."""
    return _hasher.hash("not a real password")


class AccountError(CasebridgeError):
    """An account could not be created (bad name, unknown role, weak password, name taken)."""


class TooManyAttempts(CasebridgeError):
    """Sign-in refused without checking the password: too many recent failures from this address."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Officer:
    """Who is signed in."""

    id: int
    name: str
    role: str
    csrf_token: str

    @property
    def actor(self) -> str:
        return f"user:{self.name}"

    def can(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


def create_user(store: Store, name: str, role: str, password: str, *, actor: str = "cli") -> int:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise AccountError("a name is 1-64 letters, digits, '.', '_' or '-'")
    if len(password) < 12:
        raise AccountError("a password has at least 12 characters")
    with store.transaction() as session:
        if session.scalar(select(ConsoleUser.id).where(ConsoleUser.name == name)) is not None:
            raise AccountError(f"there is already an account named {name!r}")
        user = ConsoleUser(name=name, role=role, password_hash=_hasher.hash(password))
        session.add(user)
        session.add(AuditEntry(step="account_created", actor=actor, detail={"name": name, "role": role},
                               at=utc_now()))
        session.flush()
        return user.id


def demo_operator(store: Store, name: str = "demo") -> str:
    """For ``broker run --demo`` only: an operator account with a fresh random password, which is returned."""
    password = secrets.token_urlsafe(12)
    with store.transaction() as session:
        user = session.scalar(select(ConsoleUser).where(ConsoleUser.name == name))
        if user is None:
            session.add(ConsoleUser(name=name, role="operator", password_hash=_hasher.hash(password)))
        else:
            user.role, user.password_hash, user.disabled_at = "operator", _hasher.hash(password), None
    return password


def sign_in(store: Store, name: str, password: str, address: str, *, max_failures: int = MAX_FAILURES,
            window: timedelta = FAILURE_WINDOW) -> str:
    """A new session token for the right password; raises TooManyAttempts, or returns '' for a wrong one.

    After ``max_failures`` refused sign-ins from ``address`` within ``window``, that address is refused without a
    check until enough of them are older than the window (TooManyAttempts says how long). Other addresses, and the
    account itself, are not held back.
    """
    now = utc_now()
    since = now - window
    with store.read() as session:
        recent = select(SignInFailure.at).where(SignInFailure.address == address[:64], SignInFailure.at >= since)
        count = session.scalar(select(func.count()).select_from(recent.subquery())) or 0
        freed_by = session.scalar(recent.order_by(SignInFailure.at).offset(count - max_failures).limit(1)) \
            if count >= max_failures else None
        user = session.scalar(select(ConsoleUser).where(ConsoleUser.name == name, ConsoleUser.disabled_at.is_(None)))
    if freed_by is not None:
        wait = max(1.0, (freed_by + window - now).total_seconds())
        raise TooManyAttempts(f"too many failed sign-ins from this address: try again in {round(wait)} seconds", wait)
    if not _verify(user.password_hash if user else _dummy_hash(), password) or user is None:
        with store.transaction() as session:
            session.execute(insert(SignInFailure).values(name=name[:64], address=address[:64], at=now))
        return ""
    token = secrets.token_urlsafe(32)
    with store.transaction() as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        session.add(ConsoleSession(token_hash=_digest(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                                   created_at=now, expires_at=now + timedelta(hours=SESSION_HOURS)))
        session.add(AuditEntry(step="signed_in", actor=f"user:{user.name}", detail={}, at=now))
    return token


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def officer_for(store: Store, token: str | None) -> Officer | None:
    if not token:
        return None
    with store.read() as session:
        row = session.execute(
            select(ConsoleUser, ConsoleSession.csrf_token)
            .join(ConsoleSession, ConsoleSession.user_id == ConsoleUser.id)
            .where(ConsoleSession.token_hash == _digest(token), ConsoleSession.expires_at > utc_now(),
                   ConsoleUser.disabled_at.is_(None))
        ).first()
    if row is None:
        return None
    return Officer(id=row.ConsoleUser.id, name=row.ConsoleUser.name, role=row.ConsoleUser.role,
                   csrf_token=row.csrf_token)


def sign_out(store: Store, token: str) -> None:
    with store.transaction() as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _digest(token)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
