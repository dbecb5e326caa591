"""Group commit: submissions that arrive within a few milliseconds of each other share one intake transaction.

Each HTTP request's event is handed to the batcher, which takes what has gathered (up to ``max_batch``, waiting at
most ``linger_seconds`` after the first), records it all in one transaction with :meth:`Intake.accept_many`, and only
then answers each request with its own outcome. The 202 still means the case is durably recorded: nobody is answered
before the commit that holds their event. Under light load a request waits no more than the linger; under heavy
load one commit (and its fsync) serves a whole window of requests instead of each paying for its own.

A transaction spends most of its time waiting on the database's round trips, so on PostgreSQL several committers
take batches at once: while one waits, the next gathers what has arrived meanwhile. (SQLite has one writer at a
time, so there one committer is all that helps.)
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import structlog

from broker.intake.transaction import Intake, Outcome, Submission
from broker.logging import describe_error

log = structlog.get_logger("casebridge.intake.batcher")


@dataclass
class _Waiting:
    submission: Submission
    outcome: Future[Outcome]


class IntakeBatcher:
    def __init__(self, intake: Intake, *, stop: threading.Event, after_commit: Callable[[], None] | None = None,
                 max_batch: int = 200, linger_seconds: float = 0.002, committers: int = 1) -> None:
        self.intake = intake
        self.stop_event = stop
        self.after_commit = after_commit
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds
        self._queue: queue.Queue[_Waiting] = queue.Queue()
        self._committers = [threading.Thread(target=self._run, name=f"intake-committer-{number}", daemon=True)
                            for number in range(committers)]

    def start(self) -> None:
        for committer in self._committers:
            committer.start()

    def is_alive(self) -> bool:
        return any(committer.is_alive() for committer in self._committers)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the committers to finish what was submitted (after ``stop``), ``timeout`` for each at most."""
        for committer in self._committers:
            committer.join(timeout)

    def submit(self, submission: Submission) -> Future[Outcome]:
        """The outcome, once the transaction holding it has committed (or the error that stopped it)."""
        outcome: Future[Outcome] = Future()
        if self.stop_event.is_set() and not self.is_alive():
            outcome.set_exception(RuntimeError("the broker is stopping"))
            return outcome
        self._queue.put(_Waiting(submission, outcome))
        return outcome

    def _run(self) -> None:
        while not self.stop_event.is_set() or not self._queue.empty():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._commit(self._gather(first))

    def _gather(self, first: _Waiting) -> list[_Waiting]:
        batch = [first]
        deadline = time.monotonic() + self.linger_seconds
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = self.intake.accept_many([waiting.submission for waiting in batch])
        except Exception as exc:  # nothing of the batch was recorded: each request is told (a 503, an outage)
            log.warning("intake.batch_failed", events=len(batch), error=describe_error(exc))
            for waiting in batch:
                waiting.outcome.set_exception(exc)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.outcome.set_result(outcome)
        if self.after_commit is not None:
            self.after_commit()
