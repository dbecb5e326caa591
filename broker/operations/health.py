"""Is this process up, and can it do its work? ``/health/live`` and ``/health/ready``, for orchestrators.

Live means the process answers. Ready means it can do its job: the store is reachable and migrated to the newest
schema, RabbitMQ is reachable where this process uses it, and the outbox relay (where it runs) is going round. Each
check that fails says why, so an operator reading the answer knows what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from broker.logging import describe_error
from broker.store.database import Store, schema_is_current

#: A readiness check: None when it passes, else why it does not.
Check = Callable[[], str | None]


@dataclass
class Health:
    store: Store
    #: Further checks by name (RabbitMQ, the relay), added by the process as it starts its parts.
    checks: dict[str, Check] = field(default_factory=dict)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready?, the answer's body): every check's outcome, and what failed."""
        results = {"store": self._store()}
        for name, check in self.checks.items():
            try:
                results[name] = check()
            except Exception as exc:  # a check that cannot run says so, it does not crash the answer
                results[name] = f"the check itself failed: {describe_error(exc)}"
        failing = {name: why for name, why in results.items() if why is not None}
        body: dict[str, Any] = {"status": "failing" if failing else "ready",
                                "checks": {name: why or "ok" for name, why in results.items()}}
        if failing:
            body["failing"] = sorted(failing)
        return not failing, body

    def _store(self) -> str | None:
        try:
            with self.store.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            if not schema_is_current(self.store.engine):
                return "the store's schema is not the newest: run `broker db upgrade`"
        except Exception as exc:
            return f"the store cannot be reached: {describe_error(exc)}"
        return None


def live() -> dict[str, str]:
    return {"status": "live"}
