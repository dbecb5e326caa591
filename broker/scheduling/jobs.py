"""Jobs that schedules can run. Each takes the broker's store and the schedule's options."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from broker.batch.jobs import OPTION_MODELS, export_job, import_job
from broker.errors import JobFailed
from broker.feedback.polling import PollFailed, poll_target
from broker.logging import describe_error
from broker.model.events import utc_now
from broker.plugins.contract import Capability
from broker.plugins.registry import adapter_class, build_adapter
from broker.scheduling.context import Job, JobContext
from broker.store.tables import AuditEntry, DeliveryRecord
from broker.transport.pointer import DeliveryPointer, enqueue_deliveries

log = structlog.get_logger("casebridge.jobs")

def requeue_stale_deliveries(context: JobContext, options: dict[str, Any]) -> dict[str, Any]:
    """Publish again the pointers of real-time deliveries that have waited too long.

    A safety net, not the normal path: a queue purged by hand or a message lost outside Casebridge would
    otherwise leave a delivery pending forever. Re-publishing is safe: a worker skips a delivery that is
    already recorded as delivered or failed.
    """
    store = context.store
    older_than = timedelta(minutes=float(options.get("older_than_minutes", 30)))
    limit = int(options.get("limit", 10_000))
    cutoff = utc_now() - older_than
    now = utc_now()
    with store.transaction() as session:
        waiting = session.scalars(
            select(DeliveryRecord).where(
                DeliveryRecord.mode == "realtime",
                DeliveryRecord.state.in_(("pending", "in_flight")),
                DeliveryRecord.updated_at < cutoff,
            ).order_by(DeliveryRecord.id).limit(limit)
        ).all()
        # A delivery left in flight by a worker that stopped is resumed: the target is asked first.
        enqueue_deliveries(session, (DeliveryPointer(delivery.id, delivery.target, delivery.event_id,
                                                     delivery.case_pk, resume=delivery.state == "in_flight")
                                     for delivery in waiting), now)
        for delivery in waiting:
            delivery.updated_at = now
            session.add(AuditEntry(
                case_pk=delivery.case_pk, event_id=delivery.event_id, target=delivery.target, step="requeued",
                actor="scheduler", detail={"waited_minutes": older_than.total_seconds() / 60}, at=now,
            ))
    log.info("job.requeue_stale", requeued=len(waiting))
    return {"requeued": len(waiting)}


def poll_lob_status_changes(context: JobContext, options: dict[str, Any]) -> dict[str, Any]:
    """Turn status changes made in LOB systems into ``case.status_changed`` events (options: ``targets``,
    ``overlap_minutes``, ``first_look_back_minutes``, ``max_window_hours``).

    Each target is polled on its own: one that fails (its system down, say) is recorded against it in the summary
    -- ``{"error": ..., "polled_until": ...}``, its mark left where it was -- and the others are polled all the
    same. Only then, if any failed, the job raises JobFailed, so the run is recorded as failed with every target's
    result.
    """
    wanted = options.get("targets")
    overlap = timedelta(minutes=float(options.get("overlap_minutes", 10)))
    first_look_back = timedelta(minutes=float(options.get("first_look_back_minutes", 60)))
    max_window = timedelta(hours=float(options.get("max_window_hours", 6)))
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name, target in context.configuration.targets.items():
        if wanted and name not in wanted:
            continue
        try:
            if Capability.poll_updates not in adapter_class(target.definition.adapter).capabilities:
                continue
            adapter = build_adapter(target.definition.adapter, name, target.settings, target.mapping)
            try:
                result = poll_target(context.store, context.intake, context.configuration, name, adapter,
                                     overlap=overlap, first_look_back=first_look_back, max_window=max_window)
            finally:
                adapter.close()
        except PollFailed as exc:
            failed[name] = exc.reason
            results[name] = {"changes": exc.result.changes, "emitted": exc.result.emitted, "error": exc.reason,
                             "polled_until": _iso(exc.result.polled_until)}
            continue
        except Exception as exc:  # the adapter could not be built, or the mark not read: this target alone fails
            failed[name] = describe_error(exc)
            log.warning("lob.poll_failed", target=name, error=failed[name])
            results[name] = {"error": failed[name]}
            continue
        results[name] = {"changes": result.changes, "emitted": result.emitted}
    summary = {"targets": results}
    if failed:
        raise JobFailed("could not poll " + "; ".join(f"{name}: {reason}" for name, reason in failed.items()), summary)
    return summary


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def reconcile_unconfirmed_deliveries(context: JobContext, options: dict[str, Any]) -> dict[str, Any]:
    """Search targets for creates that may have landed unconfirmed (options: ``settle_minutes``, ``limit``); see
    :mod:`broker.delivery.reconciliation`."""
    from broker.delivery.reconciliation import reconcile_unconfirmed

    return {"targets": reconcile_unconfirmed(
        context.store, context.configuration, settle=timedelta(minutes=float(options.get("settle_minutes", 15))),
        limit=int(options.get("limit", 500)),
    )}


def retention(context: JobContext, options: dict[str, Any]) -> dict[str, Any]:
    """Purge what the retention settings say may go (options may override ``payload_days``, ``audit_days``,
    ``failed_days``, ``batch_rows``); see :mod:`broker.store.retention`."""
    from broker.settings import Settings
    from broker.store.retention import RetentionPolicy, purge

    settings = context.settings or Settings()
    policy = RetentionPolicy(
        payload_days=float(options.get("payload_days", settings.retention_payload_days)),
        audit_days=float(options.get("audit_days", settings.retention_audit_days)),
        failed_days=float(options.get("failed_days", settings.retention_failed_days)),
        batch_rows=int(options.get("batch_rows", settings.retention_batch_rows)),
    )
    progress = context.progress
    return purge(context.store, policy,
                 progress=(lambda what, done: progress(what.replace("_", " "), done, None)) if progress else None)


JOBS: dict[str, Job] = {
    "deliveries.requeue_stale": requeue_stale_deliveries,
    "lob.poll_status_changes": poll_lob_status_changes,
    "deliveries.reconcile_unconfirmed": reconcile_unconfirmed_deliveries,
    "store.retention": retention,
    "batch.export": export_job,
    "batch.import": import_job,
}

#: Jobs that record their own runs (with a lease, and as ``skipped`` when another process holds it), also when
#: started by hand; the scheduler records every other job's runs.
RECORDS_OWN_RUNS = frozenset({"batch.export", "batch.import"})

#: Jobs whose options a model validates (``broker check`` and the scheduler report problems with file and line).
JOB_OPTIONS = dict(OPTION_MODELS)
