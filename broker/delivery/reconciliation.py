"""Resolve deliveries whose create may have landed but could not be confirmed: search the target, then ask people.

A delivery is ``unconfirmed`` when an attempt may have created a record at the target (a timeout after the request
was sent, a worker that died inside the call) and the target offers no look-up that can say whether it did.
Creating again could make a second record, so it is not sent again. This job asks each such target to search
for what those deliveries may have made (``Adapter.reconcile``): what it finds is recorded as delivered, with the
target's reference; what it still cannot find once ``settle_minutes`` have passed -- long enough for a create the
target was still working on to have finished -- goes to the failed-message store with the reason
``delivery_unconfirmed``, where support staff link it to the LOB record they find, or create it anyway.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from broker.config.loader import Configuration
from broker.errors import DeliveryError, DeliveryUnconfirmed
from broker.logging import describe_error
from broker.model.events import utc_now
from broker.plugins.contract import Adapter, Capability, DeliveryRequest
from broker.plugins.registry import build_adapter
from broker.store import claims, deliveries
from broker.store.claims import PendingDelivery
from broker.store.database import Store
from broker.store.deliveries import Delivered
from broker.store.tables import DeliveryRecord

log = structlog.get_logger("casebridge.reconciliation")

UNCONFIRMED = ("unconfirmed",)
#: The reason support staff see for a delivery that reconciliation could not resolve.
REASON = "delivery_unconfirmed"


def reconcile_unconfirmed(store: Store, configuration: Configuration, *,
                          settle: timedelta = timedelta(minutes=15), limit: int = 500) -> dict[str, Any]:
    """Search every target that has unconfirmed deliveries; returns what became of them, per target."""
    waiting = _unconfirmed_by_target(store, limit)
    results: dict[str, Any] = {}
    for target, since in waiting.items():
        spec = configuration.targets.get(target)
        if spec is None:
            results[target] = {"error": "the target is no longer configured"}
            continue
        adapter = build_adapter(spec.definition.adapter, target, spec.settings, spec.mapping)
        try:
            results[target] = _reconcile_target(store, adapter, since, settle=settle)
        except DeliveryError as exc:  # this target could not be searched now; the others carry on
            log.warning("reconciliation.target_failed", target=target, reason=exc.reason)
            results[target] = {"error": f"{exc.reason}: {exc.message}", "waiting": len(since)}
        except Exception as exc:
            log.warning("reconciliation.target_failed", target=target, error=describe_error(exc))
            results[target] = {"error": describe_error(exc), "waiting": len(since)}
        finally:
            adapter.close()
    return results


def _unconfirmed_by_target(store: Store, limit: int) -> dict[str, dict[int, datetime]]:
    """Unconfirmed delivery ids and since when they have been unconfirmed, per target."""
    found: dict[str, dict[int, datetime]] = defaultdict(dict)
    with store.read() as session:
        for row in session.execute(
            select(DeliveryRecord.id, DeliveryRecord.target, DeliveryRecord.updated_at)
            .where(DeliveryRecord.state == "unconfirmed").order_by(DeliveryRecord.id).limit(limit)
        ):
            found[row.target][row.id] = row.updated_at
    return dict(found)


def _reconcile_target(store: Store, adapter: Adapter[Any], since: dict[int, datetime], *,
                      settle: timedelta) -> dict[str, int]:
    pending = claims.load_open(store, since, states=UNCONFIRMED)
    if not pending:
        return {"found": 0, "to_support_staff": 0, "still_waiting": 0}
    if Capability.reconcile not in adapter.capabilities:
        found = {}
    else:
        found = adapter.reconcile([_request(delivery) for delivery in pending.values()])
    delivered = [
        Delivered(delivery, delivery.attempts, found[delivery.our_reference].external_ref,
                  {**found[delivery.our_reference].detail, "found_by_reconciliation": True})
        for delivery in pending.values() if delivery.our_reference in found
    ]
    recorded = deliveries.record_delivered_many(store, delivered, states=UNCONFIRMED)
    now = utc_now()
    to_staff = 0
    for delivery in pending.values():
        if delivery.our_reference in found or now - since[delivery.delivery_id] < settle:
            continue
        to_staff += deliveries.record_failed(
            store, delivery, attempts=delivery.attempts, error=_unresolved(delivery), error_class="unconfirmed",
            states=UNCONFIRMED,
        )
    summary = {"found": sum(recorded), "to_support_staff": to_staff,
               "still_waiting": len(pending) - len(delivered) - to_staff}
    log.info("reconciliation.target_done", target=adapter.target, **summary)
    return summary


def _request(delivery: PendingDelivery) -> DeliveryRequest:
    return DeliveryRequest(
        target=delivery.target, event=delivery.event, our_reference=delivery.our_reference,
        external_ref=delivery.external_ref, attempt=delivery.attempts,
        first_attempt_at=delivery.first_attempt_at or delivery.event.occurred_at,
    )


def _unresolved(delivery: PendingDelivery) -> DeliveryUnconfirmed:
    started = delivery.first_attempt_at.isoformat(timespec="seconds") if delivery.first_attempt_at else "unknown"
    return DeliveryUnconfirmed(
        REASON,
        f"an attempt to create this case in {delivery.target!r} may have landed (first attempt {started}), and "
        f"no record carrying our reference {delivery.our_reference} was found there. If the case is in the LOB "
        "system, link this message to its record; if it is not, create it anyway.",
    )
