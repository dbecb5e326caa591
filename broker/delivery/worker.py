"""Deliver recorded deliveries to their target: quick in-process retries, then recorded outcomes."""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from broker.config.models import RetryPolicy, UnconfirmedPolicy
from broker.delivery.circuit import CircuitBreaker
from broker.errors import DeliveryUnconfirmed, PermanentDeliveryError, TransientDeliveryError
from broker.model.events import utc_now
from broker.operations import metrics
from broker.operations.tracing import span
from broker.plugins.contract import Adapter, Capability, DeliveryOutcome, DeliveryRequest
from broker.store import claims, deliveries
from broker.store.claims import Claim, Handed, PendingDelivery
from broker.store.database import Store
from broker.store.deliveries import Delivered
from broker.transport.pointer import Pointer

log = structlog.get_logger("casebridge.delivery")
BoundLogger = structlog.typing.FilteringBoundLogger

#: A Retry-After longer than this is not waited for in-process.
_MAX_IN_PROCESS_WAIT = 10.0
#: An adapter raising something it did not classify waits in the queue this many times, then fails.
_MAX_UNEXPECTED_ROUNDS = 3
#: A target whose calls take less than this on average is called one delivery after another: handing so short a
#: call to another thread costs the worker more CPU than the wait it would overlap (measured: with a target
#: answering in under a millisecond, four calls at once cut what a loaded two-core machine delivered by 15-25%).
QUICK_CALL_SECONDS = 0.005
#: Weight of the newest call in a target's running average call time.
_CALL_TIME_WEIGHT = 0.2


def backoff_delay(policy: RetryPolicy, rounds_done: int, retry_after: float | None) -> float:
    """Seconds until the next redelivery: the policy's step for this round, jittered, never before Retry-After."""
    step = policy.delays_seconds[min(max(rounds_done - 1, 0), len(policy.delays_seconds) - 1)]
    jittered = step * random.uniform(1 - policy.jitter, 1 + policy.jitter)
    return max(jittered, retry_after or 0.0)


class DeliveryWorker:
    """Turns delivery pointers from the queue into calls to the target's adapter and recorded outcomes.

    Pointers come a prefetch window at a time: the deliveries are loaded and claimed (``in_flight``, under this
    worker's name) in one transaction each, the target is called for each, up to its ``concurrency`` at once on
    threads of this worker's own, and the successes are recorded together, every half second at the latest.
    Failures are recorded as they happen. Everything is committed before the caller acknowledges the queue
    messages, so a crash at any point leaves a delivery either recorded or still queued, never lost; a worker that
    finds a delivery still in flight after a crash first asks the target whether the earlier call took effect, so
    the target never gets the case twice.
    """

    #: Successful deliveries are recorded at least this often while a batch is being worked through.
    record_every_seconds = 0.5

    def __init__(self, store: Store, adapters: dict[str, Adapter[Any]], *,
                 policies: dict[str, RetryPolicy] | None = None, breakers: dict[str, CircuitBreaker] | None = None,
                 unconfirmed: dict[str, UnconfirmedPolicy] | None = None,
                 concurrency: dict[str, int] | None = None,
                 quick_retries: int = 3, quick_wait_max: float = 2.0, worker_id: str | None = None) -> None:
        self.store = store
        self.adapters = adapters
        self.policies = policies or {}
        self.breakers = breakers or {}
        self.unconfirmed = unconfirmed or {}
        #: Calls to each target made at once (one, unless given).
        self.concurrency = concurrency or {}
        self.quick_retries = quick_retries
        self.quick_wait_max = quick_wait_max
        self.worker_id = worker_id
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        #: Each target's running average time of a call, in seconds (none until its first call).
        self.call_seconds: dict[str, float] = {}

    def handle(self, delivery_id: int, *, redelivered: bool = False) -> str:
        """Process one delivery; returns the state it ended in (see :meth:`handle_batch`)."""
        return self.handle_batch([Pointer(delivery_id, redelivered)])[0]

    def handle_batch(self, pointers: Sequence[Pointer]) -> list[str]:
        """Process the deliveries; returns, per pointer, ``delivered``, ``retrying``, ``unconfirmed`` (held
        for reconciliation: the target cannot say whether an earlier create landed) or ``failed``, or
        ``waiting`` (behind an earlier event of its case), ``deferred`` (another live worker is calling the
        target: hand it over again later) or ``skipped`` (nothing to do)."""
        results = ["skipped"] * len(pointers)
        loaded = claims.load_open(self.store, (pointer.delivery_id for pointer in pointers))
        handed: list[tuple[int, Handed]] = []
        for index, pointer in enumerate(pointers):
            pending = loaded.get(pointer.delivery_id)
            if pending is None:
                log.info("delivery.skipped", delivery_id=pointer.delivery_id, reason="already settled")
            elif pending.target not in self.adapters:
                results[index] = self._no_adapter(pending)
            else:
                handed.append((index, Handed(pending, pointer.redelivered)))
        decided = claims.claim_many(self.store, [item for _, item in handed], worker_id=self.worker_id)
        calls: list[_Call] = []
        for (index, item), claim in zip(handed, decided, strict=True):
            if claim in (Claim.go, Claim.resume):
                calls.append(_Call(index, item.delivery, claim, self._bound(item.delivery)))
            else:
                results[index] = self._not_called(item.delivery, claim)
        self._call_targets(calls, results)
        for pointer, result in zip(pointers, results, strict=True):
            pending = loaded.get(pointer.delivery_id)
            metrics.DELIVERIES.labels(pending.target if pending else "(settled)", result).inc()
        return results

    def close(self) -> None:
        """Let the threads that call targets go once their calls are done; safe to call more than once."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def _not_called(self, pending: PendingDelivery, claim: Claim) -> str:
        bound = self._bound(pending)
        if claim is Claim.wait:
            bound.info("delivery.waiting", reason="an earlier event of this case is still on its way")
            return "waiting"
        if claim is Claim.defer:
            bound.info("delivery.deferred", reason="another worker, still alive, is calling the target")
            return "deferred"
        bound.info("delivery.skipped", reason="settled, not due, or in flight with another worker")
        return "skipped"

    def _call_targets(self, calls: list[_Call], results: list[str]) -> None:
        """Call the target for each claimed delivery, up to ``concurrency`` at once; record the successes together.

        The claim never hands over two deliveries of one case for one target in a window (the later one waits),
        so calls running side by side are for different cases and a case's events still reach the target in
        order. Every call has finished before this returns, even when one raised: a delivery is never handed
        over again (and called again) while an earlier call for it may still be going on.
        """
        succeeded: list[tuple[int, Delivered, BoundLogger]] = []
        last_recorded = time.monotonic()
        first_error: BaseException | None = None
        for finished in self._outcomes(calls):
            for call, outcome in finished:
                if isinstance(outcome, BaseException):
                    first_error = first_error or outcome
                elif isinstance(outcome, Delivered):
                    succeeded.append((call.index, outcome, call.bound))
                else:
                    results[call.index] = outcome
            if succeeded and time.monotonic() - last_recorded >= self.record_every_seconds:
                self._record_successes(succeeded, results)
                succeeded, last_recorded = [], time.monotonic()
        self._record_successes(succeeded, results)
        if first_error is not None:
            raise first_error

    def _outcomes(self, calls: list[_Call]) -> Iterator[list[tuple[_Call, Delivered | str | BaseException]]]:
        """Each call's outcome (or what it raised) as calls finish; an empty list now and then while none does."""
        width = self._width(calls)
        if width <= 1:
            for call in calls:
                try:
                    yield [(call, self._deliver(call))]
                except Exception as error:  # the rest of the window is left claimed: it is handed over again
                    yield [(call, error)]
                    return
            return
        executor = self._calling_threads()
        queued = list(reversed(calls))
        running: dict[Future[Delivered | str], _Call] = {}
        while True:
            while len(running) < width and queued:
                waiting = queued.pop()
                running[executor.submit(contextvars.copy_context().run, self._deliver, waiting)] = waiting
            if not running:
                return
            done, _ = wait(running, timeout=self.record_every_seconds, return_when=FIRST_COMPLETED)
            finished: list[tuple[_Call, Delivered | str | BaseException]] = []
            for future in done:
                raised = future.exception()
                finished.append((running.pop(future), raised if raised is not None else future.result()))
            yield finished

    def _width(self, calls: list[_Call]) -> int:
        """How many of these calls may run at once: the targets' concurrency; one while a circuit is not closed (a
        probe is one delivery, not a handful), or while the target answers too quickly for threads to pay."""
        if len(calls) <= 1:
            return 1
        targets = {call.delivery.target for call in calls}
        if any((breaker := self.breakers.get(target)) is not None and breaker.state != "closed"
               for target in targets):
            return 1
        if any(self.call_seconds.get(target, QUICK_CALL_SECONDS) < QUICK_CALL_SECONDS for target in targets):
            return 1
        return min(len(calls), *(self.concurrency.get(target, 1) for target in targets))

    def _calling_threads(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(self.concurrency.values(), default=1),
                    thread_name_prefix=f"deliver-{'-'.join(sorted(self.adapters))}"[:40])
            return self._executor

    def _deliver(self, call: _Call) -> Delivered | str:
        pending = call.delivery
        with span("casebridge.delivery", target=pending.target, event_id=pending.event_id,
                  correlation_id=pending.correlation_id, case_id=pending.case_id, claim=call.claim.value):
            return self._attempt(pending, call.claim, call.bound)

    def _attempt(self, pending: PendingDelivery, claim: Claim, bound: BoundLogger) -> Delivered | str:
        """Call the target (with quick retries) for a claimed delivery; failures are recorded here.

        The claim counted this attempt and marked the delivery as possibly landed. Whatever happens next, what
        is known about earlier attempts is never forgotten: if one may have taken effect, the target is asked
        before anything is sent, on this attempt and on every later one (after a retry, a take-over, a replay).
        """
        adapter = self.adapters[pending.target]
        breaker = self.breakers.get(pending.target)
        earlier_may_have_landed = pending.may_have_landed or claim is Claim.resume
        paused = breaker.seconds_until_probe() if breaker else 0.0
        if paused > 0:  # the circuit opened while this message was on its way: do not call, come back later
            # Nothing was sent: the claim's count is given back, and what was known of earlier attempts kept.
            deliveries.record_retry_later(
                self.store, pending, attempts=pending.attempts, may_have_landed=earlier_may_have_landed,
                error=TransientDeliveryError("circuit_open", f"target {pending.target!r} is paused after failures"),
                next_attempt_at=utc_now() + timedelta(seconds=_jittered(paused)),
            )
            return "retrying"
        run = _Run(attempts=pending.attempts, may_have_landed=earlier_may_have_landed)
        outcome: DeliveryOutcome | None = None
        try:
            for attempt in self._retrying(pending, run):
                with attempt:
                    run.attempts += 1  # the store counted it already: at the claim, or before the quick retry
                    if run.may_have_landed:
                        outcome = self._found_earlier(adapter, pending, run, bound)
                        if outcome is not None:
                            bound.info("delivery.found_at_target", external_ref=outcome.external_ref)
                            break
                    outcome = self._call(adapter, pending, run)
        except PermanentDeliveryError as error:
            if breaker:
                breaker.succeeded()  # the target answered; it is the data it refused
            deliveries.record_failed(self.store, pending, attempts=run.attempts, error=error,
                                     error_class="permanent", may_have_landed=run.may_have_landed)
            bound.warning("delivery.failed", reason=error.reason, error_class="permanent", attempts=run.attempts)
            return "failed"
        except DeliveryUnconfirmed as unsure:
            return self._unconfirmed(adapter, pending, run, unsure, bound)
        except Exception as error:
            if breaker and isinstance(error, TransientDeliveryError):
                breaker.failed(deliveries.describe(error)["reason"])
            return self._later_or_never(pending, run, error, bound)
        assert outcome is not None
        if breaker:
            breaker.succeeded()
        return Delivered(pending, run.attempts, outcome.external_ref, outcome.detail)

    def _record_successes(self, succeeded: list[tuple[int, Delivered, BoundLogger]], results: list[str]) -> None:
        settled = deliveries.record_delivered_many(self.store, [item for _, item, _ in succeeded])
        now = utc_now()
        for (index, item, bound), by_us in zip(succeeded, settled, strict=True):
            results[index] = "delivered"
            if by_us and item.delivery.received_at is not None:
                metrics.DELIVERY_LATENCY.labels(item.delivery.target).observe(
                    (now - item.delivery.received_at).total_seconds())
            bound.info("delivery.delivered", attempts=item.attempts, has_external_ref=item.external_ref is not None,
                       **({} if by_us else {"note": "already recorded by another worker"}))

    def _no_adapter(self, pending: PendingDelivery) -> str:
        error = PermanentDeliveryError("unknown_target", f"no adapter is configured for target {pending.target!r}")
        deliveries.record_failed(self.store, pending, attempts=pending.attempts, error=error, error_class="permanent")
        self._bound(pending).warning("delivery.failed", reason=error.reason)
        return "failed"

    @staticmethod
    def _bound(pending: PendingDelivery) -> BoundLogger:
        bound: BoundLogger = log.bind(
            delivery_id=pending.delivery_id, target=pending.target, case_id=pending.case_id,
            event_id=pending.event_id, correlation_id=pending.correlation_id,
        )
        return bound

    def _found_earlier(self, adapter: Adapter[Any], pending: PendingDelivery, run: _Run,
                       bound: BoundLogger) -> DeliveryOutcome | None:
        """Ask the target whether an earlier attempt took effect; None means: send."""
        if Capability.lookup not in adapter.capabilities:
            return None
        try:
            found = adapter.find_delivered(self._request(pending, run.attempts))
        except DeliveryUnconfirmed:
            if self.unconfirmed.get(pending.target, UnconfirmedPolicy.reconcile) is UnconfirmedPolicy.reconcile:
                raise
            bound.warning("delivery.recreating_unconfirmed", attempts=run.attempts,
                          note="the target cannot say whether an earlier attempt landed; on_unconfirmed: recreate")
            found = None
        except TransientDeliveryError as error:
            run.failed_lookup = True  # nothing was sent: asking again at once is safe
            raise error
        if found is None:
            run.may_have_landed = False  # the target says no earlier attempt took effect
        return found

    def _unconfirmed(self, adapter: Adapter[Any], pending: PendingDelivery, run: _Run, unsure: DeliveryUnconfirmed,
                     bound: BoundLogger) -> str:
        """Hold a create the target cannot confirm for reconciliation; without it, support staff decide."""
        if Capability.reconcile in adapter.capabilities:
            deliveries.record_unconfirmed(self.store, pending, attempts=run.attempts, error=unsure)
            bound.warning("delivery.unconfirmed", reason=unsure.reason, attempts=run.attempts)
            return "unconfirmed"
        deliveries.record_failed(self.store, pending, attempts=run.attempts, error=unsure, error_class="unconfirmed",
                                 may_have_landed=True)
        bound.warning("delivery.failed", reason=unsure.reason, error_class="unconfirmed", attempts=run.attempts)
        return "failed"

    def _later_or_never(self, pending: PendingDelivery, run: _Run, error: Exception, bound: BoundLogger) -> str:
        """After the quick retries: schedule a redelivery through the queue, each wait longer, or give up."""
        error_class = "transient" if isinstance(error, TransientDeliveryError) else "unexpected"
        policy = self.policies.get(pending.target, RetryPolicy())
        now = utc_now()
        started = pending.first_attempt_at or now
        deferrals = pending.deferrals + 1
        delay = backoff_delay(policy, deferrals, getattr(error, "retry_after", None))
        give_up_at = started + timedelta(hours=policy.give_up_after_hours)
        too_many_surprises = error_class == "unexpected" and deferrals >= _MAX_UNEXPECTED_ROUNDS
        if now + timedelta(seconds=delay) > give_up_at or too_many_surprises:
            deliveries.record_failed(self.store, pending, attempts=run.attempts, error=error, error_class=error_class,
                                     may_have_landed=run.may_have_landed)
            bound.warning("delivery.failed", reason=deliveries.describe(error)["reason"], error_class=error_class,
                          attempts=run.attempts)
            return "failed"
        next_attempt_at = now + timedelta(seconds=delay)
        deliveries.record_retry_later(self.store, pending, attempts=run.attempts, error=error,
                                      next_attempt_at=next_attempt_at, may_have_landed=run.may_have_landed,
                                      deferrals=deferrals)
        metrics.DELIVERY_RETRIES.labels(pending.target).inc()
        bound.warning("delivery.retry_scheduled", reason=deliveries.describe(error)["reason"],
                      error_class=error_class, attempts=run.attempts, retry_in_seconds=round(delay, 1),
                      may_have_landed=run.may_have_landed)
        return "retrying"

    def _call(self, adapter: Adapter[Any], pending: PendingDelivery, run: _Run) -> DeliveryOutcome:
        run.failed_lookup = False
        started = time.monotonic()
        try:
            with span("casebridge.adapter.deliver", target=pending.target, attempt=run.attempts,
                      correlation_id=pending.correlation_id):
                return adapter.deliver(self._request(pending, run.attempts))
        except PermanentDeliveryError:
            raise  # the target refused it: this attempt created nothing
        except TransientDeliveryError as error:
            run.may_have_landed = run.may_have_landed or error.may_have_landed
            raise
        except BaseException:
            run.may_have_landed = True  # an adapter's surprise: the call may have got through
            raise
        finally:
            self._note_call_time(pending.target, time.monotonic() - started)

    def _note_call_time(self, target: str, seconds: float) -> None:
        average = self.call_seconds.get(target)
        self.call_seconds[target] = seconds if average is None else \
            average + _CALL_TIME_WEIGHT * (seconds - average)

    @staticmethod
    def _request(pending: PendingDelivery, attempt: int) -> DeliveryRequest:
        return DeliveryRequest(
            target=pending.target, event=pending.event, our_reference=pending.our_reference,
            external_ref=pending.external_ref, attempt=attempt, first_attempt_at=pending.first_attempt_at or utc_now(),
        )

    def _retrying(self, pending: PendingDelivery, run: _Run) -> Retrying:
        """Quick in-process retries, for blips only: a failed look-up, or a call that cannot have landed.

        A call that may have landed (a timeout after sending) is not retried at once: a look-up straight away
        could miss a create the target is still working on. It waits for the next round through the queue.
        """
        def note_failure(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if error is not None:
                deliveries.record_attempt_failed(self.store, pending, attempt=run.attempts, error=error)

        base_wait = wait_random_exponential(multiplier=0.2, max=self.quick_wait_max)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                return float(min(retry_after, _MAX_IN_PROCESS_WAIT))
            return float(base_wait(state))

        def worth_trying_now(error: BaseException) -> bool:
            if isinstance(error, PermanentDeliveryError | DeliveryUnconfirmed):
                return False
            if isinstance(error, TransientDeliveryError):
                return run.failed_lookup or not error.may_have_landed
            return not run.may_have_landed

        return Retrying(
            retry=retry_if_exception(worth_trying_now),
            stop=stop_after_attempt(self.quick_retries + 1),
            wait=wait,
            before_sleep=note_failure,
            reraise=True,
        )


@dataclass(frozen=True, slots=True)
class _Call:
    """A claimed delivery to call its target for, and where its result goes."""

    index: int
    delivery: PendingDelivery
    claim: Claim
    bound: BoundLogger


@dataclass
class _Run:
    """One claimed delivery's attempts in this worker."""

    attempts: int
    #: Some attempt, earlier or in this run, may have taken effect and no look-up has shown otherwise.
    may_have_landed: bool
    #: The last failure was the look-up, not the call: nothing was sent.
    failed_lookup: bool = False


def _jittered(seconds: float, spread: float = 0.2) -> float:
    return seconds * random.uniform(1.0, 1.0 + spread)
