"""API keys of client systems: created once, stored as SHA-256 digests, looked up by digest."""

from __future__ import annotations

import hashlib
import secrets
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


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: Store, system: str) -> str:
    """Make a new key for ``system``; the clear key is returned once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as session:
        session.add(ApiKey(system=system, key_prefix=key[:12], key_hash=_digest(key)))
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
