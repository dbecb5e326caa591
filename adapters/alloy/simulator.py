"""Yotta Alloy's REST API in a box, as far as the adapter uses it: for tests, demos and integration engineers.

``POST /api/item`` makes an item (checking the Bearer key, the design, and that the reference and description
attributes are given), ``GET``/``PUT /api/item/{id}`` read and edit one (an edit must carry the item's current
``signature``, else 409 ``ItemSignatureMismatch``), ``POST /api/aqs/query`` answers ``Equals`` on an attribute and
``GreaterThan`` on ``lastEditDate``, a page at a time, and ``/api/item-log/item/{id}`` lists and reconstructs an
item's versions. Errors come back as Alloy's error documents (``errorCode``, ``errorCodeString``,
``debugErrorMessage``). An officer can move an item's status on, as the demo's does.

    python -m adapters.alloy.simulator --port 8028
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DESIGN = "designs_customerRequests"
REFERENCE = "attributes_customerRequestsExternalReference"
DESCRIPTION = "attributes_customerRequestsDescription"
STATUS = "attributes_customerRequestsStatus"
NOTES = "attributes_customerRequestsNotes"
CATEGORY = "attributes_customerRequestsCategory"
#: Status items: id -> name. New items start at the first.
STATUSES = {"5f0000000000000000000001": "Logged", "5f0000000000000000000002": "Inspection scheduled",
            "5f0000000000000000000003": "Works in progress", "5f0000000000000000000004": "Completed",
            "5f0000000000000000000005": "Closed - no action"}
CATEGORIES = {"5e0000000000000000000001": "Missed bin", "5e0000000000000000000002": "Fly-tipping",
              "5e0000000000000000000003": "Pothole"}
INITIAL_STATUS = "5f0000000000000000000001"


def _now() -> datetime:
    return datetime.now(UTC)


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Item:
    item_id: str
    design_code: str
    collection: str
    attributes: dict[str, Any]
    signature: str
    last_edit: datetime
    #: (date, signature, attributes) of every version, oldest first.
    versions: list[tuple[datetime, str, dict[str, Any]]] = field(default_factory=list)

    def document(self, attributes: dict[str, Any] | None = None, signature: str | None = None) -> dict[str, Any]:
        shown = self.attributes if attributes is None else attributes
        return {"itemId": self.item_id, "designCode": self.design_code, "collection": self.collection,
                "context": "Customer", "signature": signature or self.signature,
                "lastEditDate": _text(self.last_edit),
                "attributes": [{"attributeCode": code, "value": value} for code, value in shown.items()]}


class AlloySimulator:
    """Serves the API on a daemon thread at ``http://host:port/api/``."""

    def __init__(self, *, api_key: str = "demo-key", host: str = "127.0.0.1", port: int = 0,
                 first_number: int = 1) -> None:
        self.api_key = api_key
        self.items: dict[str, Item] = {}
        self.requests: list[tuple[str, str]] = []
        self._numbers = itertools.count(first_number)
        self._signatures = itertools.count(1)
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="alloy-simulator",
                         daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def number_after(self, highest: int) -> None:
        self._numbers = itertools.count(highest + 1)

    def officer_sets_status(self, item_id: str, status_item: str, when: datetime | None = None) -> None:
        with self._lock:
            item = self.items[item_id]
            self._edit(item, {STATUS: [status_item]}, when)

    def records_for(self, our_reference: str) -> list[str]:
        with self._lock:
            return sorted(item.item_id for item in self.items.values()
                          if item.attributes.get(REFERENCE) == our_reference)

    # -- the API -------------------------------------------------------------------------------------------------

    def _new_signature(self) -> str:
        return f"{0x6400000000000000000000 + next(self._signatures):024x}"

    def _edit(self, item: Item, changes: dict[str, Any], when: datetime | None = None) -> None:
        moment = when or _now()
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        if item.versions and moment <= item.versions[-1][0]:  # versions are told apart by their millisecond
            moment = item.versions[-1][0] + timedelta(milliseconds=1)
        item.attributes.update(changes)
        item.signature = self._new_signature()
        item.last_edit = moment
        item.versions.append((moment, item.signature, copy.deepcopy(item.attributes)))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("designCode") != DESIGN:
            raise _Refused(400, "DesignNotFound", f"design {body.get('designCode')!r} does not exist")
        attributes = {entry["attributeCode"]: entry.get("value") for entry in body.get("attributes") or []}
        for required in (REFERENCE, DESCRIPTION):
            if attributes.get(required) in (None, ""):
                raise _Refused(400, "AttributeRequired", f"attribute {required} is required")
        category = attributes.get(CATEGORY)
        if category is not None and (not isinstance(category, list) or any(c not in CATEGORIES for c in category)):
            raise _Refused(400, "InvalidLinkValue", f"{CATEGORY} must link to category items")
        attributes.setdefault(STATUS, [INITIAL_STATUS])
        with self._lock:
            number = next(self._numbers)
            item = Item(f"{0x6300000000000000000000 + number:024x}", DESIGN, body.get("collection") or "Live", {},
                        "", _now())
            self._edit(item, attributes)
            self.items[item.item_id] = item
            return {"item": item.document()}

    def read(self, item_id: str) -> dict[str, Any]:
        with self._lock:
            item = self.items.get(item_id)
            if item is None:
                raise _Refused(404, "ItemNotFound", f"item {item_id} does not exist")
            return {"item": item.document()}

    def edit(self, item_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            item = self.items.get(item_id)
            if item is None:
                raise _Refused(404, "ItemNotFound", f"item {item_id} does not exist")
            if body.get("signature") != item.signature:
                raise _Refused(409, "ItemSignatureMismatch", "the item has changed since its signature was read")
            status = next((entry.get("value") for entry in body.get("attributes") or []
                           if entry.get("attributeCode") == STATUS), None)
            if status is not None and (not isinstance(status, list) or any(s not in STATUSES for s in status)):
                raise _Refused(400, "InvalidLinkValue", f"{STATUS} must link to status items")
            self._edit(item, {entry["attributeCode"]: entry.get("value") for entry in body.get("attributes") or []})
            return {"item": item.document()}

    def query(self, body: dict[str, Any], page: int, page_size: int) -> dict[str, Any]:
        aqs: dict[str, Any] = body["aqs"] if isinstance(body.get("aqs"), dict) else body
        if aqs.get("type") != "Query":
            raise _Refused(400, "InvalidAqs", "only Query is supported here")
        design = (aqs.get("properties") or {}).get("dodiCode")
        with self._lock:
            found = [item for item in self.items.values() if item.design_code == design]
            for condition in aqs.get("children") or []:
                found = [item for item in found if self._matches(item, condition)]
            found.sort(key=lambda item: item.item_id)
            start = (page - 1) * page_size
            return {"page": page, "pageSize": page_size, "totalResults": len(found),
                    "totalPages": max(1, -(-len(found) // page_size)),
                    "results": [item.document() for item in found[start:start + page_size]]}

    @staticmethod
    def _matches(item: Item, condition: dict[str, Any]) -> bool:
        kind = condition.get("type")
        left, right = (condition.get("children") or [{}, {}])[:2]
        values = (right.get("properties") or {})
        values = values.get("value", values.get("values")) or []
        if kind == "Equals" and left.get("type") == "Attribute":
            return item.attributes.get(str((left.get("properties") or {}).get("attributeCode"))) in values
        if kind == "GreaterThan" and (left.get("properties") or {}).get("itemPropertyName") == "lastEditDate":
            return item.last_edit > _parse(values[0])
        raise _Refused(400, "InvalidAqs", f"the simulator does not answer {kind} on this node")

    def versions(self, item_id: str) -> dict[str, Any]:
        with self._lock:
            item = self.items.get(item_id)
            if item is None:
                raise _Refused(404, "ItemNotFound", f"item {item_id} does not exist")
            return {"results": [{"date": _text(date), "itemId": item_id} for date, _sig, _attrs in item.versions]}

    def reconstruct(self, item_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            item = self.items.get(item_id)
            if item is None:
                raise _Refused(404, "ItemNotFound", f"item {item_id} does not exist")
            when = _parse(str(body.get("date")))
            earlier = [version for version in item.versions if version[0] <= when + timedelta(microseconds=999)]
            if not earlier:
                raise _Refused(400, "ItemDidNotExist", f"item {item_id} did not exist at {body.get('date')}")
            _date, signature, attributes = earlier[-1]
            return {"item": item.document(attributes, signature)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                simulator.requests.append((self.command, parts.path))
                try:
                    if self.headers.get("Authorization") != f"Bearer {simulator.api_key}":
                        raise _Refused(401, "Unauthorised", "the API key is missing or not valid")
                    document = json.loads(body) if body else {}
                    answer = self._route(self.command, parts.path, parse_qs(parts.query), document)
                    self._answer(200, answer)
                except _Refused as refused:
                    self._answer(refused.status, {"errorCode": refused.status, "errorCodeString": refused.code,
                                                  "debugErrorMessage": refused.message})
                except (ValueError, KeyError, TypeError) as exc:
                    self._answer(400, {"errorCode": 400, "errorCodeString": "BadRequest",
                                       "debugErrorMessage": str(exc)})

            def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> dict[str, Any]:
                if method == "POST" and path == "/api/item":
                    return simulator.create(body)
                if match := re.fullmatch(r"/api/item/([0-9a-f]{24})", path):
                    return simulator.read(match[1]) if method == "GET" else simulator.edit(match[1], body)
                if method == "POST" and path == "/api/aqs/query":
                    return simulator.query(body, int(query.get("page", ["1"])[0]),
                                           int(query.get("pageSize", ["100"])[0]))
                if method == "GET" and (match := re.fullmatch(r"/api/item-log/item/([0-9a-f]{24})", path)):
                    return simulator.versions(match[1])
                if method == "POST" and (match := re.fullmatch(r"/api/item-log/item/([0-9a-f]{24})/reconstruct",
                                                                path)):
                    return simulator.reconstruct(match[1], body)
                raise _Refused(404, "NotFound", f"no such endpoint: {method} {path}")

            def _answer(self, status: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a Yotta Alloy API simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8028)
    parser.add_argument("--api-key", default="demo-key")
    args = parser.parse_args()
    simulator = AlloySimulator(api_key=args.api_key, host=args.host, port=args.port)
    print(f"Alloy simulator on {simulator.url} (API key {args.api_key})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        simulator.close()


if __name__ == "__main__":
    main()
