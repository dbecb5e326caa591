"""Per-target circuit breaker: stop calling a target that keeps failing, probe it now and then, resume by itself.

Each worker process keeps one breaker per target, shared by the threads that call the target (under a lock). While the
circuit is open the target's delivery consumer stops taking messages — they wait in RabbitMQ, cases keep being
accepted — and after a pause one delivery goes through as a probe: success closes the circuit, failure opens it
again for twice as long (up to a limit). Transitions are written to the store so ``broker status`` can show them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from broker.config.models import CircuitPolicy
from broker.logging import describe_error
from broker.model.events import utc_now
from broker.store.database import Store, is_postgres
from broker.store.tables import TargetCircuit

log = structlog.get_logger("casebridge.circuit")


class CircuitBreaker:
    def __init__(self, target: str, policy: CircuitPolicy, store: Store | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.policy = policy
        self.store = store
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self.open_for = policy.open_seconds
        self.retry_at = 0.0
        self._lock = threading.RLock()

    def seconds_until_probe(self) -> float:
        """0 if a call may go now (closed, or time to probe); otherwise how long the target stays paused."""
        if self.state != "open":
            return 0.0
        with self._lock:
            if self.state != "open":
                return 0.0
            remaining = self.retry_at - self.clock()
            if remaining > 0:
                return remaining
            self._move("half_open", None)
            return 0.0

    def succeeded(self) -> None:
        """The target answered (even a rejection of the data shows it is up)."""
        if self.state == "closed" and self.failures == 0:
            return
        with self._lock:
            self.failures = 0
            self.open_for = self.policy.open_seconds
            if self.state != "closed":
                self._move("closed", None)

    def failed(self, error: str) -> None:
        """A delivery to the target failed transiently, after its quick retries."""
        with self._lock:
            self.failures += 1
            if self.state == "half_open":
                self.open_for = min(self.open_for * 2, self.policy.max_open_seconds)
                self._open(error)
            elif self.state == "closed" and self.failures >= self.policy.failures:
                self._open(error)

    def _open(self, error: str) -> None:
        self.retry_at = self.clock() + self.open_for
        self._move("open", error)

    def _move(self, state: str, error: str | None) -> None:
        self.state = state
        log.warning("circuit." + state, target=self.target, consecutive_failures=self.failures,
                    pause_seconds=round(self.open_for, 1) if state == "open" else None)
        if self.store is not None:
            try:
                self._persist(error)
            except Exception as exc:  # the state is for display; never let it stop deliveries
                log.warning("circuit.not_recorded", target=self.target, error=describe_error(exc))

    def _persist(self, error: str | None) -> None:
        now = utc_now()
        values = {
            "target": self.target, "state": self.state, "consecutive_failures": self.failures, "updated_at": now,
            "opened_at": now if self.state == "open" else None,
            "retry_at": now + timedelta(seconds=self.open_for) if self.state == "open" else None,
            "last_error": error,
        }
        assert self.store is not None
        with self.store.transaction() as session:
            upsert = (postgresql_insert if is_postgres(session) else sqlite_insert)(TargetCircuit).values(**values)
            update = {key: value for key, value in values.items() if key != "target"}
            if self.state != "open":
                update.pop("opened_at")
                update.pop("last_error")
            session.execute(upsert.on_conflict_do_update(index_elements=["target"], set_=update))
