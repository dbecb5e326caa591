"""What administrators look after from the console: officers' accounts and client systems' API keys.

Every change is written to the audit trail with the administrator's name.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from broker.errors import CasebridgeError
from broker.model.events import utc_now
from broker.store.database import Store
from broker.store.keys import create_key, keys_changed
from broker.store.tables import ApiKey, AuditEntry, ConsoleSession, ConsoleUser


class AdminRefused(CasebridgeError):
    pass


def list_users(store: Store) -> list[ConsoleUser]:
    with store.read() as session:
        return list(session.scalars(select(ConsoleUser).order_by(ConsoleUser.name)))


def set_disabled(store: Store, user_id: int, disabled: bool, *, actor: str, own_id: int) -> None:
    """Disable (signing them out everywhere) or enable an account; nobody can lock themselves out."""
    if user_id == own_id:
        raise AdminRefused("you cannot disable your own account")
    now = utc_now()
    with store.transaction() as session:
        user = session.get(ConsoleUser, user_id)
        if user is None:
            raise AdminRefused(f"no account {user_id}")
        user.disabled_at = now if disabled else None
        if disabled:
            session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))
        session.add(AuditEntry(step="account_disabled" if disabled else "account_enabled", actor=actor,
                               detail={"name": user.name}, at=now))


def list_keys(store: Store) -> list[ApiKey]:
    with store.read() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.system, ApiKey.id)))


def issue_key(store: Store, system: str, *, actor: str) -> str:
    system = system.strip()
    if not system or len(system) > 64 or not all(c.isalnum() or c in "._-" for c in system):
        raise AdminRefused("a system name is 1-64 letters, digits, '.', '_' or '-'")
    key = create_key(store, system)
    with store.transaction() as session:
        session.add(AuditEntry(step="api_key_created", actor=actor, detail={"system": system,
                                                                           "key_prefix": key[:12]}, at=utc_now()))
    return key


def revoke_key(store: Store, key_id: int, *, actor: str) -> None:
    now = utc_now()
    with store.transaction() as session:
        key = session.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None:
            raise AdminRefused(f"no active key {key_id}")
        key.revoked_at = now
        session.add(AuditEntry(step="api_key_revoked", actor=actor,
                               detail={"system": key.system, "key_prefix": key.key_prefix}, at=now))
    keys_changed()
