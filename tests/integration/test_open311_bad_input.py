"""Bad input to the Open311 endpoint, every parameter in turn: the spec's error document, naming the parameter at
fault, with the spec's status (403 for the key, 404 for what does not exist, 400 for anything else) -- never a 500,
never a traceback, and nothing recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from support.harness import RunningBroker, write_mappings
from support.open311_schemas import check_answer
from support.raw_http import raw_request
from support.receiver import WebhookReceiver
from support.services import postgres_database, sqlite_database

from broker.settings import Settings
from broker.store.keys import create_key
from broker.store.tables import CaseRecord, EventRecord

Form = list[tuple[str, str]]


class Live:
    def __init__(self, folder: Path, database_url: str) -> None:
        self.receiver = WebhookReceiver()
        (folder / "schedules").mkdir()
        self.running = RunningBroker(Settings(
            database_url=database_url, amqp_url="memory://", amqp_namespace="open311",
            mappings_dir=write_mappings(folder / "mappings", self.receiver.url), schedules_dir=folder / "schedules",
            outbox_poll_seconds=0.2,
        ))
        self.key = create_key(self.running.broker.store, "fixmystreet")
        self.url = f"{self.running.base_url}/open311/v2/"
        self.http = httpx.Client(timeout=30)

    def events(self) -> int:
        with self.running.broker.store.read() as session:
            return session.scalar(select(func.count()).select_from(EventRecord)) or 0

    def close(self) -> None:
        self.http.close()
        self.running.stop()
        self.receiver.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One broker per store for the whole module (PostgreSQL refuses some text SQLite takes: a NUL)."""
    folder = tmp_path_factory.mktemp("open311")
    if request.param == "sqlite":
        broker = Live(folder, sqlite_database(folder / "open311.db", migrated=True))
        yield broker
        broker.close()
        return
    with postgres_database(migrated=True) as url:
        broker = Live(folder, url)
        yield broker
        broker.close()


def refused(response: httpx.Response, status: int, parameter: str, *, code: int | None = None) -> str:
    """The answer is the spec's error document with ``status``, one of its errors naming ``parameter``."""
    fmt = "json" if response.request.url.path.endswith(".json") else "xml"
    check_answer("errors", fmt, response.status_code, response.headers.get("content-type", ""), response.content)
    assert response.status_code == status, response.text
    if fmt == "json":
        errors = [(error["code"], error["description"]) for error in response.json()]
    else:
        from lxml import etree

        root = etree.fromstring(response.content)
        errors = [(int(error.findtext("code") or 0), error.findtext("description") or "") for error in root]
    assert any(text.startswith(f"{parameter}:") and (code is None or found == code) for found, text in errors), errors
    assert "Traceback" not in response.text
    return response.text


def report(live: Live, **changes: str | None) -> Form:
    form = {"api_key": live.key, "jurisdiction_id": "example.gov.uk", "service_code": "highways.pothole",
            "lat": "51.507748", "long": "-0.127969", "description": "title: Hole\n\ndetail: Deep", "email":
            "ada@example.org", "first_name": "Ada", "last_name": "Lovelace", "phone": "020 7946 0000",
            "media_url": "https://fixmystreet.example/p/1.jpeg", "attribute[fixmystreet_id]": "77",
            "attribute[hazard]": "cyclists", "attribute[depth_mm]": "40"}
    form.update(changes)
    return [(name, value) for name, value in form.items() if value is not None]


#: (what is changed, the status, the parameter named): each a report that must be refused, nothing recorded.
BAD_REPORTS: list[tuple[str, dict[str, str | None], int, str]] = [
    ("no key", {"api_key": None}, 403, "api_key"),
    ("a wrong key", {"api_key": "cbk_not-a-key"}, 403, "api_key"),
    ("another council", {"jurisdiction_id": "elsewhere.gov.uk"}, 404, "jurisdiction_id"),
    ("no service", {"service_code": None}, 400, "service_code"),
    ("an unknown service", {"service_code": "highways.unicorns"}, 404, "service_code"),
    ("lat without long", {"long": None}, 400, "long"),
    ("long without lat", {"lat": None}, 400, "lat"),
    ("lat not a number", {"lat": "north-ish"}, 400, "lat"),
    ("lat out of range", {"lat": "91"}, 400, "lat"),
    ("long out of range", {"long": "-181"}, 400, "long"),
    ("nowhere at all", {"lat": None, "long": None}, 400, "lat"),
    ("an address too long", {"address_string": "x" * 501}, 400, "address_string"),
    ("an address id too long", {"address_id": "1" * 101}, 400, "address_id"),
    ("an email that is not one", {"email": "ada at example"}, 400, "email"),
    ("a phone that is not one", {"phone": "call me maybe"}, 400, "phone"),
    ("a name too long", {"first_name": "A" * 300}, 400, "first_name"),
    ("no description", {"description": None}, 400, "description"),
    ("a description too long", {"description": "x" * 20_001}, 400, "description"),
    ("a NUL in the description", {"description": "a\x00b"}, 400, "description"),
    ("a media_url that is not http", {"media_url": "ftp://example.org/p.jpeg"}, 400, "media_url"),
    ("a media_url that is not a URL", {"media_url": "a photo"}, 400, "media_url"),
    ("an attribute the service does not ask", {"attribute[colour]": "red"}, 400, "attribute[colour]"),
    ("a value not in the pick-list", {"attribute[hazard]": "horses"}, 400, "attribute[hazard]"),
    ("a number that is not one", {"attribute[depth_mm]": "deep"}, 400, "attribute[depth_mm]"),
    ("a date that is not one", {"attribute[first_noticed]": "last Tuesday"}, 400, "attribute[first_noticed]"),
    ("a grid reference off the grid", {"attribute[easting]": "9999999", "attribute[northing]": "1"}, 400,
     "attribute[easting]"),
    ("an attribute key that is not one", {"attribute[a][b]": "x"}, 400, "attribute[a][b]"),
    ("a report number too long", {"attribute[fixmystreet_id]": "9" * 101}, 400, "attribute[fixmystreet_id]"),
]


@pytest.mark.parametrize(("changes", "status", "parameter"), [case[1:] for case in BAD_REPORTS],
                         ids=[case[0] for case in BAD_REPORTS])
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_a_bad_report_is_refused_naming_the_parameter(live: Live, fmt: str, changes: dict[str, str | None],
                                                      status: int, parameter: str) -> None:
    before = live.events()
    response = live.http.post(f"{live.url}requests.{fmt}", data=dict(report(live, **changes)))
    refused(response, status, parameter)
    assert live.events() == before


def test_every_problem_of_a_report_is_named_at_once(live: Live) -> None:
    text = refused(live.http.post(f"{live.url}requests.xml", data=dict(report(
        live, lat="x", email="nope", **{"attribute[hazard]": "horses"}))), 400, "lat")
    assert "email:" in text and "attribute[hazard]:" in text


def test_a_value_given_twice_for_a_one_value_question_is_refused(live: Live) -> None:
    form = [*report(live), ("attribute[hazard]", "vehicles")]
    refused(live.http.post(f"{live.url}requests.xml", content=httpx.QueryParams(form).__str__(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"}), 400, "attribute[hazard]")


def test_a_five_megabyte_description_is_refused_naming_it(live: Live) -> None:
    before = live.events()
    body = httpx.QueryParams(report(live, description="x" * 5_000_000)).__str__().encode()
    response = live.http.post(f"{live.url}requests.xml", content=body,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    text = refused(response, 400, "description", code=413)
    assert "1048576 bytes" in text
    assert live.events() == before


@pytest.mark.parametrize(("body", "parameter"), [
    (b"description=caf%E9", "description"),
    ("description=café".encode(), "description"),
], ids=["percent-encoded Latin-1", "raw bytes"])
def test_a_form_that_is_not_utf8_is_refused_naming_the_parameter(live: Live, body: bytes, parameter: str) -> None:
    form = httpx.QueryParams(report(live, description=None)).__str__().encode() + b"&" + body
    refused(live.http.post(f"{live.url}requests.xml", content=form,
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}),
            400, parameter)


def test_an_unknown_format_resource_service_request_or_token_is_404(live: Live) -> None:
    refused(live.http.get(f"{live.url}services.html"), 404, "format")
    refused(live.http.get(f"{live.url}services.json", params={"jurisdiction_id": "elsewhere.gov.uk"}), 404,
            "jurisdiction_id")
    refused(live.http.get(f"{live.url}services/highways.unicorns.xml"), 404, "service_code")
    refused(live.http.get(f"{live.url}requests/CB-00000000-0000-0000-0000-000000000000.json",
                          params={"api_key": live.key}), 404, "service_request_id")
    refused(live.http.get(f"{live.url}tokens/12345.xml"), 404, "token")
    refused(live.http.get(f"{live.url}services/highways%0Apothole.json"), 404, "service_code")  # a line break
    response = live.http.get(f"{live.url}reports.xml")
    check_answer("errors", "xml", response.status_code, response.headers["content-type"], response.content)
    assert response.status_code == 404
    deleted = live.http.delete(f"{live.url}requests.xml")
    check_answer("errors", "xml", deleted.status_code, deleted.headers["content-type"], deleted.content)
    assert deleted.status_code == 400 and b"<code>405</code>" in deleted.content


@pytest.mark.parametrize("path", ["requests.xml", "requests/CB-1.xml", "servicerequestupdates.xml"])
@pytest.mark.parametrize("key", [None, "cbk_wrong"], ids=["no key", "wrong key"])
def test_reading_requests_or_updates_needs_a_key(live: Live, path: str, key: str | None) -> None:
    refused(live.http.get(f"{live.url}{path}", params={"api_key": key} if key else {}), 403, "api_key")


@pytest.fixture(scope="module")
def reported(live: Live) -> str:
    """A report on file, for updates to be about."""
    response = live.http.post(f"{live.url}requests.json", data=dict(report(
        live, **{"attribute[fixmystreet_id]": "9001"})))
    assert response.status_code == 200, response.text
    reference: str = response.json()[0]["service_request_id"]
    return reference


def update(live: Live, reference: str, **changes: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {"api_key": live.key, "jurisdiction_id": "example.gov.uk", "update_id": "601",
                                   "service_request_id": reference, "status": "OPEN",
                                   "updated_datetime": "2026-11-20T09:15:00+00:00", "description": "Still there",
                                   "first_name": "Ada", "last_name": "-", "email": "ada@example.org"}
    form.update(changes)
    return {name: value for name, value in form.items() if value is not None}


BAD_UPDATES: list[tuple[str, dict[str, str | None], int, str]] = [
    ("no key", {"api_key": None}, 403, "api_key"),
    ("another council", {"jurisdiction_id": "elsewhere.gov.uk"}, 404, "jurisdiction_id"),
    ("no update_id", {"update_id": None}, 400, "update_id"),
    ("an update_id too long", {"update_id": "1" * 101}, 400, "update_id"),
    ("no service_request_id", {"service_request_id": None}, 400, "service_request_id"),
    ("an unknown request", {"service_request_id": "CB-nothing-like-it"}, 404, "service_request_id"),
    ("no status", {"status": None}, 400, "status"),
    ("an unknown status", {"status": "MAYBE"}, 400, "status"),
    ("no updated_datetime", {"updated_datetime": None}, 400, "updated_datetime"),
    ("a datetime without its zone", {"updated_datetime": "2026-11-20T09:15:00"}, 400, "updated_datetime"),
    ("a datetime that is not one", {"updated_datetime": "20/11/2026 09:15"}, 400, "updated_datetime"),
    ("nothing to say", {"description": None}, 400, "description"),
    ("a description too long", {"description": "x" * 20_001}, 400, "description"),
    ("a text and photo too long together", {"description": "x" * 19_990,
                                            "media_url": "https://fixmystreet.example/p/1.jpeg"}, 400, "description"),
    ("a name too long", {"first_name": "A" * 300}, 400, "first_name"),
    ("a NUL in the text", {"description": "a\x00b"}, 400, "description"),
    ("a media_url that is not http", {"media_url": "file:///etc/passwd"}, 400, "media_url"),
]


@pytest.mark.parametrize(("changes", "status", "parameter"), [case[1:] for case in BAD_UPDATES],
                         ids=[case[0] for case in BAD_UPDATES])
def test_a_bad_update_is_refused_naming_the_parameter(live: Live, reported: str, changes: dict[str, str | None],
                                                      status: int, parameter: str) -> None:
    before = live.events()
    refused(live.http.post(f"{live.url}servicerequestupdates.xml", data=update(live, reported, **changes)), status,
            parameter)
    assert live.events() == before


BAD_WINDOWS: list[tuple[str, dict[str, str], str]] = [
    ("a start without an end", {"start_date": "2026-11-20T09:00:00Z"}, "end_date"),
    ("an end without a start", {"end_date": "2026-11-20T09:00:00Z"}, "start_date"),
    ("a start that is not a datetime", {"start_date": "this morning", "end_date": "2026-11-20T09:00:00Z"},
     "start_date"),
    ("an end without its zone", {"start_date": "2026-11-20T07:00:00Z", "end_date": "2026-11-20T09:00:00"},
     "end_date"),
    ("an end before the start", {"start_date": "2026-11-20T09:00:00Z", "end_date": "2026-11-20T07:00:00Z"},
     "end_date"),
    ("more than 90 days", {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}, "end_date"),
]


@pytest.mark.parametrize(("params", "parameter"), [case[1:] for case in BAD_WINDOWS],
                         ids=[case[0] for case in BAD_WINDOWS])
@pytest.mark.parametrize("path", ["servicerequestupdates", "requests"])
def test_a_bad_window_is_refused_naming_the_date(live: Live, path: str, params: dict[str, str],
                                                 parameter: str) -> None:
    if path == "requests" and len(params) == 1:
        return  # requests takes either date alone (the other is 90 days from it)
    refused(live.http.get(f"{live.url}{path}.json", params={"api_key": live.key, **params}), 400, parameter)


def test_a_status_filter_that_is_neither_open_nor_closed_is_refused(live: Live) -> None:
    refused(live.http.get(f"{live.url}requests.xml", params={"api_key": live.key, "status": "pending"}), 400,
            "status")


@pytest.mark.parametrize("hostile", [
    lambda live: live.http.post(f"{live.url}requests.xml", content=b"\xff\xfe\x00garbage",
                                headers={"Content-Type": "multipart/form-data; boundary=zzz"}),
    lambda live: live.http.post(f"{live.url}requests.xml", content=b"{\"service_code\": 1}",
                                headers={"Content-Type": "application/json"}),
    lambda live: live.http.post(f"{live.url}requests.xml", data={**dict(report(live)),
                                                                 **{f"f{n}": "x" for n in range(1100)}}),
    lambda live: live.http.get(f"{live.url}requests.xml", params={"api_key": live.key, "service_request_id": ","}),
    lambda live: live.http.get(f"{live.url}services/%00.xml"),
    lambda live: live.http.get(f"{live.url}requests/{'x' * 5000}.xml", params={"api_key": live.key}),
], ids=["a broken multipart body", "JSON instead of a form", "too many fields", "an empty id list",
        "a NUL in the path", "a very long id"])
def test_hostile_requests_get_a_4xx_in_the_spec_format(live: Live, hostile: Callable[[Live], httpx.Response]) -> None:
    response = hostile(live)
    assert 400 <= response.status_code < 500 or response.status_code == 200, response.text
    kind = "errors" if response.status_code >= 400 else "requests"
    check_answer(kind, "xml", response.status_code, response.headers["content-type"], response.content)
    with live.running.broker.store.read() as session:
        assert session.scalar(select(func.count()).select_from(CaseRecord).where(
            CaseRecord.case_id == "77")) == 0


def test_a_huge_body_declared_or_chunked_is_cut_off_at_the_limit_in_the_spec_format(live: Live) -> None:
    """The key is in the body, so the body is read before the key is checked, but never past the limit."""
    head = ("POST /open311/v2/requests.xml HTTP/1.1\r\nHost: casebridge\r\n"
            "Content-Type: application/x-www-form-urlencoded")
    prefix = f"api_key={live.key}&service_code=highways.pothole&description=".encode()
    body = [prefix, *(b"x" * 1_048_576 for _ in range(50))]
    for framing in (f"Content-Length: {len(prefix) + 50 * 1_048_576}", "Transfer-Encoding: chunked"):
        chunks = body if framing.startswith("Content") else chunked_parts(body)
        answer = raw_request(live.running.port, f"{head}\r\n{framing}", chunks, timeout=20)
        assert answer.status == 400, answer
        check_answer("errors", "xml", answer.status, answer.headers["content-type"], answer.body)
        assert b"<code>413</code>" in answer.body and b"description: too long" in answer.body
        assert answer.sent < 20 * 1_048_576, f"the server went on reading: {answer.sent} bytes taken"
    # Both framings at once (RFC 9112 6.1) is refused by the HTTP parser itself, before any route is chosen, so
    # the answer is the server's plain 400 rather than a GeoReport error, and the connection is closed.
    both = raw_request(live.running.port, f"{head}\r\nContent-Length: 10\r\nTransfer-Encoding: chunked",
                       [b"api_key=x"])
    assert both.status == 400 and both.body == b"Invalid HTTP request received.", both
    assert both.headers["connection"] == "close"


def chunked_parts(parts: list[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"
