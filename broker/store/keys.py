"""API keys of client systems: created once, stored as SHA-256 digests, looked up by digest."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from broker.store.database import Store
from broker.store.tables import ApiKey

KEY_PREFIX = "cbk_"


@dataclass(frozen=True)
class Caller:
    """Who an API request came from."""

    system: str
    key_prefix: str

    @property
    def actor(self) -> str:
        return f"system:{self.system}"


#: Bumped whenever a key is made or revoked in this process: every KeyCache forgets what it remembered at once.
_revision = 0


def keys_changed() -> None:
    """Tell this process's key caches that a key was made or revoked (other processes see it within their TTL)."""
    global _revision
    _revision += 1


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: Store, system: str) -> str:
    """Make a new key for ``system``; the clear key is returned once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as session:
        session.add(ApiKey(system=system, key_prefix=key[:12], key_hash=_digest(key)))
    keys_changed()
    return key


def authenticate(store: Store, key: str) -> Caller | None:
    with store.read() as session:
        row = session.execute(
            select(ApiKey.system, ApiKey.key_prefix).where(
                ApiKey.key_hash == _digest(key), ApiKey.revoked_at.is_(None)
            )
        ).first()
    return Caller(system=row.system, key_prefix=row.key_prefix) if row else None


def list_keys(store: Store) -> list[ApiKey]:
    with store.read() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.system, ApiKey.id)))


class KeyCache:
    """API keys looked up once, then remembered for ``ttl_seconds``: a request does not wait for the store to say
    whom its key belongs to. A key made or revoked in this process (the console, ``broker keys``) is seen at once;
    one changed by another process within ``ttl_seconds``. Unknown keys are remembered too, so a stream of wrong
    keys does not reach the store either."""

    def __init__(self, store: Store, *, ttl_seconds: float = 5.0, max_keys: int = 10_000) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_keys = max_keys
        self._known: dict[str, tuple[float, Caller | None]] = {}
        self._revision = _revision
        self._lock = threading.Lock()

    def cached(self, key: str) -> tuple[bool, Caller | None]:
        """(known?, the caller): known is False when the store must be asked."""
        with self._lock:
            if self._revision != _revision:
                self._known.clear()
                self._revision = _revision
            found = self._known.get(_digest(key))
        if found is None or time.monotonic() - found[0] > self.ttl_seconds:
            return False, None
        return True, found[1]

    def authenticate(self, key: str) -> Caller | None:
        """The caller, from the cache or the store (then remembered)."""
        known, caller = self.cached(key)
        if known:
            return caller
        caller = authenticate(self.store, key)
        with self._lock:
            if len(self._known) >= self.max_keys:
                self._known.clear()  # a flood of made-up keys: start again rather than grow
            self._known[_digest(key)] = (time.monotonic(), caller)
        return caller
