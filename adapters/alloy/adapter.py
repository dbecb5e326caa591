"""Canonical cases to Yotta Alloy items, and their status changes back, over Alloy's REST API.

- ``case.created`` -> ``POST item``: an item of the configured design, our reference in ``reference_attribute``
  (so it can be found again: query-before-create), the description, the location as GeoJSON, the service's own
  attribute values and the mapped case attributes. The item's ``itemId`` is the case's reference in Alloy.
- follow-ups -> ``GET item/{id}`` for its current ``signature``, then ``PUT item/{id}``: notes appended to
  ``notes_attribute`` (each with a marker naming the event, so a retried update is found, not appended twice), a
  status change as the mapped status item. A signature that changed meanwhile is read again once.
- the look-up -> an AQS ``Equals`` query on ``reference_attribute``; for a follow-up, the marker in the notes.
- status changes -> an AQS query for the design's items edited since the mark, then each item's versions
  (``item-log``) reconstructed: a version whose status differs from the one before is a change, identified by the
  item and that version's signature.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any, ClassVar

from adapters.alloy.config import AlloyConfig, AlloyMapping, AlloyService
from broker.sdk import (
    Adapter,
    Capability,
    CaseClosed,
    CaseCreated,
    CaseNoteAdded,
    CaseStatus,
    CaseStatusChanged,
    CaseUpdated,
    DeliveryOutcome,
    DeliveryRequest,
    HttpClient,
    HttpResponse,
    LobStatusChange,
    PermanentDeliveryError,
    TransientDeliveryError,
    raise_for_status,
)

#: How many times a follow-up is re-read and sent when its signature changed meanwhile.
_SIGNATURE_RETRIES = 1


def alloy_time(moment: datetime) -> str:
    """Alloy's time format: UTC with milliseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.astimezone(UTC).microsecond // 1000:03d}Z"


def parse_alloy_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event_marker(event_id: object) -> str:
    """What a follow-up's notes carry so a retried update can be recognised."""
    return f"[casebridge {event_id}]"


class AlloyAdapter(Adapter[AlloyConfig, AlloyMapping]):
    """Creates and updates items of one design; finds them by our reference; reports their status changes."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.create, Capability.update, Capability.lookup, Capability.poll_updates}
    )

    def __init__(self, target: str, config: AlloyConfig | dict[str, Any],
                 mapping: AlloyMapping | dict[str, Any] | None = None) -> None:
        super().__init__(target, config, mapping)
        settings = self.config
        self._base = str(settings.url).rstrip("/") + "/"
        self._http = HttpClient(timeout=settings.timeout_seconds, max_response_bytes=settings.max_response_bytes,
                                headers={"Accept": "application/json"}, ca_file=settings.ca_file,
                                client_cert=settings.client_cert_file, client_key=settings.client_key_file)

    @classmethod
    def realtime_warnings(cls, target: str, settings: dict[str, Any]) -> list[str]:
        if settings.get("notes_attribute"):
            return []
        return [f"target {target!r} has no notes_attribute: notes and the reasons of status changes sent to Alloy "
                "are dropped (only the status item is set)"]

    # -- delivery ------------------------------------------------------------------------------------------------

    def deliver(self, request: DeliveryRequest) -> DeliveryOutcome:
        event = request.event
        if isinstance(event, CaseCreated):
            if request.external_ref:  # made by an earlier delivery: nothing to do twice
                return DeliveryOutcome(external_ref=request.external_ref, detail={"already_created": True})
            return self._create(event, request.our_reference)
        if not request.external_ref:
            raise PermanentDeliveryError("no_item", f"case {event.case_id!r} has no Alloy item yet; its case.created "
                                                    "was not delivered")
        return self._update(request.external_ref, self._changes(request), request)

    def _create(self, event: CaseCreated, our_reference: str) -> DeliveryOutcome:
        case = event.case
        service = self._service(case.service_code)
        attributes: list[dict[str, Any]] = [
            {"attributeCode": self.config.reference_attribute, "value": our_reference},
            {"attributeCode": self.config.description_attribute, "value": case.description},
        ]
        attributes += [{"attributeCode": code, "value": value} for code, value in service.attributes.items()]
        geometry = _geometry(case.location.lat, case.location.lon, case.location.easting, case.location.northing)
        if geometry is not None:
            attributes.append({"attributeCode": self.config.geometry_attribute, "value": geometry})
        for name, value in case.attributes.items():
            code = self.mapping.attributes.get(name)
            if code is not None and value not in (None, "", []):
                attributes.append({"attributeCode": code, "value": value})
        body = {"designCode": self.config.design_code, "collection": self.config.collection, "attributes": attributes}
        item = self._item(self._call("POST", "item", body))
        return DeliveryOutcome(external_ref=item["itemId"], detail={
            "item_id": item["itemId"], "signature": item.get("signature"),
            # the item's first state is ours, not news: the poll must not report it back
            "lob_update_id": f"{item['itemId']}:{item.get('signature')}",
        })

    def _changes(self, request: DeliveryRequest) -> tuple[str | None, str | None]:
        """(status item id, notes text) for a follow-up."""
        event = request.event
        status_item: str | None = None
        text: str | None = None
        if isinstance(event, CaseStatusChanged | CaseClosed):
            status_item = self.mapping.status_items.get(event.change.status)
            text = event.change.reason or f"Status: {event.change.status.value}"
        elif isinstance(event, CaseNoteAdded):
            text = event.note.text
        elif isinstance(event, CaseUpdated):
            text = f"Details updated: {event.case.description}"
        return status_item, text

    def _update(self, item_id: str, changes: tuple[str | None, str | None],
                request: DeliveryRequest) -> DeliveryOutcome:
        status_item, text = changes
        marker = event_marker(request.event.event_id)
        for attempt in range(_SIGNATURE_RETRIES + 1):
            item = self.read_item(item_id)
            attributes: list[dict[str, Any]] = []
            if status_item:
                attributes.append({"attributeCode": self.config.status_attribute, "value": [status_item]})
            if text and self.config.notes_attribute:
                notes = str(_attributes(item).get(self.config.notes_attribute) or "")
                line = f"{marker} {text}"
                attributes.append({"attributeCode": self.config.notes_attribute,
                                   "value": f"{notes}\n{line}" if notes else line})
            if not attributes:
                return DeliveryOutcome(external_ref=item_id, detail={"nothing_to_send": True})
            response = self._send("PUT", f"item/{item_id}", {"attributes": attributes,
                                                               "signature": item.get("signature")})
            if response.status_code == 409 and attempt < _SIGNATURE_RETRIES:
                continue  # edited meanwhile (ItemSignatureMismatch): read it again
            updated = self._item(self._checked(response))
            return DeliveryOutcome(external_ref=item_id, detail={
                "signature": updated.get("signature"),
                "lob_update_id": f"{item_id}:{updated.get('signature')}",  # our own edit is not news either
                **({"status_not_mapped": True} if isinstance(request.event, CaseStatusChanged | CaseClosed)
                   and status_item is None else {}),
            })
        raise TransientDeliveryError("alloy_signature_mismatch", f"item {item_id} kept changing while it was updated")

    def find_delivered(self, request: DeliveryRequest) -> DeliveryOutcome | None:
        """A create: the item carrying our reference. A follow-up: its marker in the item's notes. Both searches
        are Alloy's own answer: nothing found means nothing was made."""
        if isinstance(request.event, CaseCreated):
            found = self.search_by_reference(request.our_reference)
            if not found:
                return None
            item = found[0]
            return DeliveryOutcome(external_ref=item["itemId"], detail={
                "found_by_reference": True, "item_id": item["itemId"],
                "lob_update_id": f"{item['itemId']}:{item.get('signature')}"})
        if not request.external_ref or not self.config.notes_attribute:
            return None
        item = self.read_item(request.external_ref)
        notes = str(_attributes(item).get(self.config.notes_attribute) or "")
        if event_marker(request.event.event_id) in notes:
            return DeliveryOutcome(external_ref=request.external_ref, detail={"found_in_notes": True})
        return None

    # -- reading -------------------------------------------------------------------------------------------------

    def read_item(self, item_id: str) -> dict[str, Any]:
        return self._item(self._call("GET", f"item/{item_id}", timeout=self.config.lookup_timeout_seconds))

    def search_by_reference(self, our_reference: str) -> list[dict[str, Any]]:
        return self.query([{"type": "Equals", "children": [
            {"type": "Attribute", "properties": {"attributeCode": self.config.reference_attribute}},
            {"type": "String", "properties": {"value": [our_reference]}},
        ]}])

    def query(self, children: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """An AQS query on the design, every page of it."""
        aqs = {"type": "Query", "properties": {"dodiCode": self.config.design_code, "attributes": ["all"],
                                               "collectionCode": [self.config.collection]},
               "children": children}
        results: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self._call("POST", f"aqs/query?page={page}&pageSize={self.config.page_size}", {"aqs": aqs},
                                timeout=self.config.lookup_timeout_seconds)
            batch = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(batch, list):
                raise TransientDeliveryError("malformed_answer", "Alloy's query answer has no results list")
            results += [item for item in batch if isinstance(item, dict) and item.get("itemId")]
            pages = answer.get("totalPages")
            if len(batch) < self.config.page_size or (isinstance(pages, int) and page >= pages):
                return results
            page += 1

    def status_changes(self, since: datetime, until: datetime) -> list[LobStatusChange]:
        """Each status change made in [since, until] to the design's items, from their version history: a version
        whose status item differs from the version before it. The first version (the item being made) is never a
        change, nor is an edit that leaves the status as it was."""
        edited = self.query([{"type": "GreaterThan", "children": [
            {"type": "ItemProperty", "properties": {"itemPropertyName": "lastEditDate"}},
            {"type": "DateTime", "properties": {"value": [alloy_time(since)]}},
        ]}])
        changes = []
        for item in edited:
            changes += self._item_changes(str(item["itemId"]), since, until)
        return sorted(changes, key=lambda change: (change.occurred_at, change.update_id))

    def _item_changes(self, item_id: str, since: datetime, until: datetime) -> list[LobStatusChange]:
        log = self._call("GET", f"item-log/item/{item_id}", timeout=self.config.lookup_timeout_seconds)
        dates = sorted({str(entry["date"]) for entry in (log.get("results") or []) if isinstance(entry, dict)
                        and entry.get("date")}, key=parse_alloy_time)
        changes = []
        before: str | None = None
        for number, date in enumerate(dates):
            moment = parse_alloy_time(date)
            version = self._item(self._call("POST", f"item-log/item/{item_id}/reconstruct", {"date": date},
                                            timeout=self.config.lookup_timeout_seconds))
            status = _first(_attributes(version).get(self.config.status_attribute))
            if number > 0 and status != before and status is not None and since <= moment <= until:
                canonical = self.mapping.statuses.get(status)
                if canonical is not None:
                    changes.append(LobStatusChange(
                        reference=item_id, update_id=f"{item_id}:{version.get('signature') or date}",
                        status=CaseStatus(canonical), external_status_code=status, occurred_at=moment))
            before = status
        return changes

    # -- the wire ------------------------------------------------------------------------------------------------

    def _service(self, service_code: str) -> AlloyService:
        service = self.mapping.services.get(service_code)
        if service is None:
            raise PermanentDeliveryError("unmapped_service_code", f"service code {service_code!r} has no entry in "
                                                                   f"the mapping of target {self.target!r}")
        return service

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise PermanentDeliveryError("alloy_api_key_missing",
                                         f"environment variable {self.config.api_key_env} is not set")
        return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def _send(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> HttpResponse:
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() if body is not None else b""
        return self._http.request(method, self._base + path, content=content, headers=self._headers(),
                                  timeout=timeout)

    def _call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        return self._checked(self._send(method, path, body, timeout=timeout))

    @staticmethod
    def _checked(response: HttpResponse) -> Any:
        if not 200 <= response.status_code < 300:
            try:
                raise_for_status(response, system="Alloy")
            except PermanentDeliveryError as refused:
                words = _error_words(response)
                raise PermanentDeliveryError(refused.reason, f"Alloy refused the request (HTTP "
                                             f"{response.status_code}){': ' + words if words else ''}",
                                             response_excerpt=refused.response_excerpt) from None
        try:
            return json.loads(response.content) if response.content else {}
        except ValueError as exc:
            raise TransientDeliveryError("malformed_answer", f"Alloy's answer is not JSON: {exc}") from exc

    @staticmethod
    def _item(answer: Any) -> dict[str, Any]:
        item = answer.get("item") if isinstance(answer, dict) else None
        if not isinstance(item, dict) or not item.get("itemId"):
            raise TransientDeliveryError("malformed_answer", "Alloy answered without an item")
        return item

    def close(self) -> None:
        self._http.close()


def _error_words(response: HttpResponse) -> str:
    """Alloy's own words for a refusal: ``errorCodeString`` and ``debugErrorMessage`` of its error document."""
    try:
        document = json.loads(response.content)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    words = [str(document[key]) for key in ("errorCodeString", "debugErrorMessage", "message") if document.get(key)]
    return " ".join(words)[:500]


def _attributes(item: dict[str, Any]) -> dict[str, Any]:
    return {entry["attributeCode"]: entry.get("value") for entry in item.get("attributes") or []
            if isinstance(entry, dict) and "attributeCode" in entry}


def _first(value: Any) -> str | None:
    """A link attribute's value is a list of item ids: the first, or None."""
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value) if value not in (None, "") else None


def _geometry(lat: float | None, lon: float | None, easting: float | None,
              northing: float | None) -> dict[str, Any] | None:
    """A GeoJSON point in WGS84 (longitude first); from the grid reference when the case gives no lat/lon."""
    if lat is not None and lon is not None:
        return {"type": "Point", "coordinates": [lon, lat]}
    if easting is not None and northing is not None:
        from pyproj import Transformer

        longitude, latitude = Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True).transform(easting,
                                                                                                        northing)
        return {"type": "Point", "coordinates": [round(float(longitude), 6), round(float(latitude), 6)]}
    return None
