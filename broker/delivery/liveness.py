"""A worker process's heartbeat: proof, kept in the store, that it is still alive (see broker.store.workers)."""

from __future__ import annotations

import threading

import structlog

from broker.logging import describe_error
from broker.store import workers
from broker.store.database import Store

log = structlog.get_logger("casebridge.liveness")


class Heartbeat(threading.Thread):
    """Renews the worker's heartbeat row every few seconds until stopped, then removes it."""

    def __init__(self, store: Store, worker_id: str, *, stop: threading.Event,
                 every_seconds: float = workers.BEAT_SECONDS) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.store = store
        self.worker_id = worker_id
        self.stop_event = stop
        self.every_seconds = every_seconds

    def beat_once(self) -> bool:
        try:
            workers.beat(self.store, self.worker_id)
        except Exception as exc:  # the store is away: deliveries wait on it anyway; keep trying
            log.warning("heartbeat.not_recorded", worker_id=self.worker_id, error=describe_error(exc))
            return False
        return True

    def run(self) -> None:
        while not self.stop_event.wait(self.every_seconds):
            self.beat_once()

    def forget(self) -> None:
        """Say the worker has stopped, so nothing waits for its heartbeat to go stale."""
        try:
            workers.forget(self.store, self.worker_id)
        except Exception as exc:
            log.warning("heartbeat.not_removed", worker_id=self.worker_id, error=describe_error(exc))
