"""An Open311 client that behaves as FixMyStreet does, for the tests to drive Casebridge's Open311 endpoint with.

Replayed from FixMyStreet's own code (mysociety/fixmystreet): ``perllib/Open311.pm`` (the calls, their parameters,
XML::Simple's reading of the answers with lists forced), ``perllib/Open311/GetServiceRequestUpdates.pm`` and
``UpdatesBase.pm`` (the polls, the date check that drops an update outside the window asked for, one comment per
``update_id``), ``perllib/FixMyStreet/Script/Reports.pm`` (a failed send is tried again later) and
``PostServiceRequestUpdates.pm`` (residents' comments). Every answer is checked against the spec's schemas
(:mod:`support.open311_schemas`) as it arrives.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import httpx
from lxml import etree

from adapters.common.soap import parse_xml
from support.open311_schemas import check_answer

#: XML::Simple's options in FixMyStreet's ``_get_xml_object``: these lists are always lists, and a list's wrapper
#: (``<attributes>``) folds into the list itself.
GROUP_TAGS = {"services": "service", "attributes": "attribute", "values": "value", "service_requests": "request",
              "errors": "error", "service_request_updates": "request_update"}
FORCE_ARRAY = set(GROUP_TAGS.values())

#: FixMyStreet's ``map_state`` (with extended statuses): an update's status as a FixMyStreet state.
_STATE_OF = {"fixed": "fixed - council", "not councils responsibility": "not responsible",
             "no further action": "unable to fix", "open": "confirmed", "closed": "closed"}
_FIXED_STATES = {"fixed", "fixed - council", "fixed - user"}
_OPEN_STATES = {"confirmed", "investigating", "in progress", "action scheduled", "planned", "for triage"}


def simple_xml(body: bytes) -> Any:
    """What XML::Simple hands FixMyStreet: the root dropped, elements as hashes, text as strings, empty as None."""
    return _simple(parse_xml(body))


def _simple(element: etree._Element) -> Any:
    children = list(element)
    if not children:
        text = element.text
        return text if text and text.strip() else None
    folded: dict[str, Any] = {}
    for child in children:
        name = str(child.tag)
        if name in GROUP_TAGS:
            items = [_simple(item) for item in child if item.tag == GROUP_TAGS[name]]
            value: Any = items or None
        else:
            value = _simple(child)
        if name in FORCE_ARRAY:
            folded.setdefault(name, []).append(value)
        elif name in folded:
            folded[name] = [*folded[name], value] if isinstance(folded[name], list) else [folded[name], value]
        else:
            folded[name] = value
    return folded


def w3cdtf(moment: datetime) -> str:
    """DateTime::Format::W3CDTF's way with a UTC time: whole seconds and ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def split_name(name: str) -> tuple[str, str]:
    """Open311.pm's ``split_name``."""
    found = re.match(r"(\w+)(?:\.?\s+(.+))?", name or "")
    return (found.group(1), found.group(2) or "") if found else ("", "")


@dataclass
class Report:
    """A problem reported on FixMyStreet, as it is sent (``_populate_service_request_params``)."""

    id: int
    service_code: str
    title: str
    detail: str
    latitude: float = 51.507748
    longitude: float = -0.127969
    name: str = "Ada Lovelace"
    email: str = "ada@example.org"
    phone: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    photos: list[str] = field(default_factory=list)
    easting: int = 530000
    northing: int = 180400
    closest_address: str = "10 Downing Street, London"
    external_id: str | None = None
    send_fail_count: int = 0
    send_fail_reason: str = ""
    state: str = "confirmed"
    whensent: datetime | None = None
    lastupdate: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    external_status_code: str = ""

    def params(self) -> list[tuple[str, str]]:
        first, last = split_name(self.name)
        description = (f"title: {self.title}\n\ndetail: {self.detail}\n\n"
                       f"url: https://fixmystreet.example/report/{self.id}\n\nSubmitted via FixMyStreet\n")
        params = [("description", description), ("service_code", self.service_code), ("first_name", first),
                  ("last_name", last), ("email", self.email),
                  ("lat", f"{self.latitude:.6f}"), ("long", f"{self.longitude:.6f}")]
        if self.phone:
            params.append(("phone", self.phone))
        params += [("media_url", url) for url in self.photos]
        extra = {"fixmystreet_id": str(self.id), "easting": str(self.easting), "northing": str(self.northing),
                 "closest_address": self.closest_address, **self.extra}
        params += [(f"attribute[{name}]", value) for name, value in extra.items()]
        return params


@dataclass
class Comment:
    """A comment on a report: one per ``update_id`` fetched, or a resident's own."""

    id: str
    report: Report
    text: str
    problem_state: str | None
    external_status_code: str
    confirmed: datetime
    #: The update_id the endpoint answered with, once a resident's comment is sent.
    external_id: str | None = None


class FixMyStreet:
    """One FixMyStreet body whose send method is Open311, pointed at ``endpoint`` (with its trailing ``/``)."""

    def __init__(self, endpoint: str, api_key: str, jurisdiction: str | None = "example.gov.uk", *,
                 fmt: str = "xml", extended_statuses: bool = True, timeout: float = 300,
                 http: httpx.Client | None = None) -> None:
        assert endpoint.endswith("/"), "FixMyStreet appends paths to the endpoint as it is stored"
        self.endpoint = endpoint
        self.api_key = api_key
        self.jurisdiction = jurisdiction
        self.fmt = fmt
        self.extended_statuses = extended_statuses
        self.http = http or httpx.Client(timeout=timeout)
        self.reports: dict[int, Report] = {}
        self.comments: dict[str, Comment] = {}
        #: Every update item fetched, as XML::Simple read it, in order (repeats included).
        self.fetched: list[dict[str, Any]] = []
        #: Items dropped by the date check: an update outside the window asked for.
        self.dropped: list[dict[str, Any]] = []

    # -- the wire (Open311.pm ``_request``) ---------------------------------------------------------------------

    def call(self, method: str, path: str, kind: str, params: list[tuple[str, str]] | None = None,
             *, endpoint: str | None = None) -> httpx.Response:
        """One request as ``_request`` makes it (a POST url-encoded as HTTP::Request::Common does, UTF-8, a list as
        repeated keys); the answer checked against the spec's schema for ``kind``."""
        params = list(params or [])
        if self.jurisdiction:
            params.append(("jurisdiction_id", self.jurisdiction))
        if method == "POST" and self.api_key:
            params.append(("api_key", self.api_key))
        url = (endpoint or self.endpoint) + path
        if method == "GET":
            response = self.http.get(url, params=params)
        else:
            response = self.http.post(url, content=urlencode(params).encode("ascii"),
                                      headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        fmt = "json" if path.split("?")[0].endswith(".json") else "xml"
        check_answer(kind, fmt, response.status_code, response.headers.get("content-type", ""), response.content)
        return response

    def read(self, response: httpx.Response) -> Any:
        return simple_xml(response.content) if self.fmt == "xml" else response.json()

    # -- the service list (PopulateServiceList.pm) ------------------------------------------------------------

    def service_list(self) -> list[dict[str, Any]]:
        found = self.read(self.call("GET", f"services.{self.fmt}", "services"))
        return list(found["service"]) if self.fmt == "xml" else list(found)

    def service_meta_info(self, code: str) -> dict[str, Any]:
        found: dict[str, Any] = self.read(self.call("GET", f"services/{code}.{self.fmt}", "service_definition"))
        return found

    # -- sending reports (SendReport/Open311.pm, Script/Reports.pm) -------------------------------------------

    def send(self, report: Report, *, endpoint: str | None = None) -> bool:
        """Send the report; on any failure it counts against the report, to be sent again later."""
        self.reports[report.id] = report
        try:
            response = self.call("POST", "requests.xml", "created", report.params(), endpoint=endpoint)
        except httpx.HTTPError as exc:
            return self._failed(report, f"request failed: {type(exc).__name__}")
        if response.status_code != 200:
            errors = simple_xml(response.content)["error"]
            return self._failed(report, "; ".join(f"{e['code']}: {e['description']}" for e in errors))
        request_id = simple_xml(response.content)["request"][0]["service_request_id"]
        if not isinstance(request_id, str):
            return self._failed(report, "no service_request_id")
        report.external_id = request_id
        report.send_fail_count = 0
        report.whensent = report.lastupdate = datetime.now(UTC).replace(microsecond=0)
        return True

    def _failed(self, report: Report, reason: str) -> bool:
        report.send_fail_count += 1
        report.send_fail_reason = reason
        return False

    # -- residents' comments (PostServiceRequestUpdates.pm) ---------------------------------------------------

    def post_comment(self, report: Report, comment_id: int, text: str, *, name: str = "Ada Lovelace",
                     email: str = "ada@example.org", mark_fixed: bool = False, reopen: bool = False,
                     photo: str | None = None, when: datetime | None = None) -> Comment:
        """A comment made on the report, sent at once (a failed one stays unsent, ``external_id`` None)."""
        state = "fixed - user" if mark_fixed else ("confirmed" if reopen else report.state)
        comment = Comment(str(comment_id), report, text, state, "", when or datetime.now(UTC))
        self.send_comment(comment, reopen=reopen, photo=photo, name=name, email=email)
        return comment

    def send_comment(self, comment: Comment, *, reopen: bool = False, photo: str | None = None,
                     name: str = "Ada Lovelace", email: str = "ada@example.org") -> str | None:
        first, last = split_name(name)
        params = [("updated_datetime", w3cdtf(comment.confirmed)),
                  ("service_request_id", comment.report.external_id or ""), ("status", self._status_of(comment,
                                                                                                       reopen)),
                  ("description", comment.text), ("last_name", last or "-"), ("first_name", first),
                  ("email", email), ("update_id", comment.id)]
        if photo:
            params.append(("media_url", photo))
        response = self.call("POST", "servicerequestupdates.xml", "posted_update", params)
        if response.status_code != 200:
            return None
        update_id = simple_xml(response.content)["request_update"][0]["update_id"]
        comment.external_id = update_id if isinstance(update_id, str) else None
        if comment.problem_state and comment.external_id:
            comment.report.state = comment.problem_state
        return comment.external_id

    def _status_of(self, comment: Comment, reopen: bool) -> str:
        state = comment.problem_state or comment.report.state
        if not self.extended_statuses:
            return "OPEN" if state in _OPEN_STATES else "CLOSED"
        for states, status in ((_FIXED_STATES, "FIXED"), ({"in progress"}, "IN_PROGRESS"),
                               ({"action scheduled", "planned"}, "ACTION_SCHEDULED"),
                               ({"investigating"}, "INVESTIGATING"), ({"duplicate"}, "DUPLICATE"),
                               ({"not responsible"}, "NOT_COUNCILS_RESPONSIBILITY"),
                               ({"unable to fix"}, "NO_FURTHER_ACTION"), ({"internal referral"}, "INTERNAL_REFERRAL")):
            if state in states:
                return status
        return "REOPEN" if reopen else "OPEN"

    # -- fetching updates (GetServiceRequestUpdates.pm, UpdatesBase.pm) ---------------------------------------

    def poll(self, now: datetime | None = None, *, hours: float = 2) -> list[Comment]:
        """The five-minute poll (``hours=2``) or the nightly one (``hours=24``): new comments made."""
        end = now or datetime.now(UTC)
        return self.fetch_updates(w3cdtf(end - timedelta(hours=hours)), w3cdtf(end))

    def fetch_updates(self, start: str, end: str) -> list[Comment]:
        response = self.call("GET", f"servicerequestupdates.{self.fmt}", "updates",
                             [("api_key", self.api_key), ("start_date", start), ("end_date", end)])
        assert response.status_code == 200, response.text
        found = self.read(response)
        items = (found or {}).get("request_update") or [] if self.fmt == "xml" else found
        made = []
        for item in items:
            self.fetched.append(item)
            moment = _check_date(item, start, end)
            if moment is None:
                self.dropped.append(item)
                continue
            report = self._report_of(item)
            if report is None or item.get("update_id") is None:
                continue
            if item["update_id"] in self.comments or any(c.external_id == item["update_id"]
                                                         for c in self.comments.values()):
                continue  # one comment per update_id
            made.append(self._comment_for(report, item, moment))
        return made

    def _report_of(self, item: dict[str, Any]) -> Report | None:
        number = item.get("fixmystreet_id")
        if number is not None:
            return self.reports.get(int(number)) if str(number).isdigit() else None
        return next((r for r in self.reports.values() if r.external_id == item.get("service_request_id")), None)

    def _comment_for(self, report: Report, item: dict[str, Any], moment: datetime) -> Comment:
        """``_process_update``: an update is never earlier than the report's sending; the report takes the update's
        state unless the update is older than the report's last change (the first update always counts)."""
        status = (item.get("status") or "").lower().replace("_", " ")
        state = _STATE_OF.get(status, status)
        if report.whensent is not None and moment <= report.whensent:
            moment = report.whensent + timedelta(seconds=1)
        first = not any(comment.report is report for comment in self.comments.values())
        comment = Comment(item["update_id"], report, item.get("description") or "", state,
                          item.get("external_status_code") or "", moment)
        self.comments[comment.id] = comment
        if (moment >= report.lastupdate or first) and state != report.state:
            report.state = state
        report.external_status_code = comment.external_status_code or report.external_status_code
        report.lastupdate = max(report.lastupdate, moment)
        return comment


def _check_date(item: dict[str, Any], start: str, end: str) -> datetime | None:
    """``check_date``: the update's time, None when it is outside the window asked for. FixMyStreet compares the
    UTC texts of whole seconds; compared as instants here, which is the same for those and also right for a window
    given to the microsecond."""
    text = item.get("updated_datetime") or ""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    low, high = (datetime.fromisoformat(bound.replace("Z", "+00:00")) for bound in (start, end))
    return moment if low <= moment <= high else None


@contextmanager
def answers_lost(upstream: str, times: int = 1) -> Iterator[str]:
    """A stand-in for the network between FixMyStreet and Casebridge: the next ``times`` requests reach Casebridge
    and are answered there, but the answer never comes back (as when FixMyStreet times out after Casebridge
    committed). Yields the URL to use in place of ``upstream``."""
    lost = {"left": times}
    lock = threading.Lock()

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._forward("GET")

        def do_POST(self) -> None:
            self._forward("POST")

        def _forward(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name: value for name, value in self.headers.items() if name.lower() not in ("host",)}
            answer = httpx.request(method, upstream.rstrip("/") + self.path, content=body, headers=headers,
                                   timeout=60)
            with lock:
                drop = lost["left"] > 0
                lost["left"] -= 1 if drop else 0
            if drop:  # answered upstream, lost on the way back
                self.close_connection = True
                return
            self.send_response(answer.status_code)
            for name in ("content-type", "retry-after"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
