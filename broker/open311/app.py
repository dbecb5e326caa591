"""The Open311 GeoReport v2 endpoint, mounted in the API at ``/open311/v2/``: a FastAPI app of its own, with its own
error format and its own OpenAPI document (``/open311/v2/openapi.json``).

Kept thin, as the API is: it reads parameters, checks the key and the jurisdiction, and answers; what a report or
an update becomes is decided in :mod:`broker.open311.reports` and :mod:`broker.open311.updates`, and taken in by
:mod:`broker.intake`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Form, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.routing import Mount
from starlette.types import ASGIApp

from broker.api.ratelimit import RateLimiter, retry_after
from broker.config.models import ServiceCatalogue
from broker.errors import IntakeRejected
from broker.intake.transaction import DuplicateEventConflict, Intake, Receipt
from broker.model.case import CaseStatus
from broker.model.events import CaseCreated, utc_now
from broker.open311.body import Utf8Guard, form_problem
from broker.open311.catalogue import service_definition, service_list
from broker.open311.documents import (
    CreatedOut,
    DiscoveryOut,
    PostedUpdateOut,
    RequestOut,
    ServiceDefinitionOut,
    ServiceOut,
    UpdateOut,
    answers,
)
from broker.open311.errors import Open311Error, bad, forbidden, install_error_handlers, not_found
from broker.open311.reports import ReportForm, given, report_event
from broker.open311.service_requests import find_cases, reference_of, request_views, search_cases
from broker.open311.statuses import spec_statuses
from broker.open311.updates import UpdateForm, check_update, resident_update, updates_between
from broker.open311.wire import MEDIA_TYPES, parse_w3c, render, w3c
from broker.store import keys
from broker.store.database import Store
from broker.store.keys import Caller

log = structlog.get_logger("casebridge.open311")

MOUNT = "/open311/v2"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
#: The longest window one request may ask for (the spec's cap on GET requests; updates take the same).
LONGEST_WINDOW = timedelta(days=90)
#: The window of ``GET servicerequestupdates`` when no dates are given (FixMyStreet's nightly catch-up).
DEFAULT_UPDATES_WINDOW = timedelta(hours=24)


@dataclass
class Open311Context:
    store: Store
    intake: Intake
    #: Called after an event commits, so the outbox relay publishes without waiting for its next poll.
    after_accept: Callable[[], None]
    #: Where clients reach Casebridge (discovery names the endpoint's URL on it, never on the Host header).
    public_base_url: str
    rate: RateLimiter | None = None
    started_at: datetime = field(default_factory=utc_now)


def install_open311(app: FastAPI, context: Open311Context) -> None:
    """Mount the endpoint in the API app (whose gate answers its refusals with :data:`broker.open311.body.GATE`)."""
    app.router.routes.append(_Mount(MOUNT, open311_app(context)))


class _Mount(Mount):
    """A mount that takes every path under it, even one holding a line break (Starlette's pattern stops at one, and
    the request would get the API's own 404 rather than Open311's)."""

    def __init__(self, path: str, app: ASGIApp) -> None:
        super().__init__(path, app=app)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


Format = Annotated[str, Path(description="xml or json", json_schema_extra={"enum": ["xml", "json"]})]
Text = str | None


def open311_app(context: Open311Context) -> FastAPI:
    app = FastAPI(
        title="Casebridge Open311 (GeoReport v2)", version="2",
        description="Open311 GeoReport v2 with FixMyStreet's extensions (servicerequestupdates). Answers are XML, "
        "or JSON when the path ends in .json; see docs/open311.md.",
        docs_url=None, redoc_url=None, openapi_url="/openapi.json",
    )
    app.add_middleware(Utf8Guard)
    install_error_handlers(app)

    def catalogue() -> ServiceCatalogue:
        return context.intake.catalogue

    def changeset() -> str:
        return catalogue().open311.changeset or w3c(context.started_at)

    def answer(fmt: str, root: str, value: list[Any] | dict[str, Any]) -> Response:
        return Response(render(fmt, root, value), media_type=MEDIA_TYPES[fmt])

    def checked(fmt: str, jurisdiction_id: str | None) -> str:
        if fmt not in MEDIA_TYPES:
            raise not_found("format", f"no format {fmt[:20]!r}: ask for .xml or .json")
        wanted = catalogue().open311.jurisdiction_id
        jurisdiction = given(jurisdiction_id)
        if wanted and jurisdiction and jurisdiction != wanted:
            raise not_found("jurisdiction_id", f"this endpoint serves {wanted} only")
        return fmt

    def caller(api_key: str | None, request: Request | None = None) -> Caller:
        """The key's caller (403 without one); for a POST, the form is then refused if it is not UTF-8."""
        key = given(api_key)
        if key is None:
            raise forbidden("required: the key this council issued to your system")
        found = keys.authenticate(context.store, key) if len(key) <= 200 else None
        if found is None:
            raise forbidden("not a key this council issued (or it was revoked)")
        wait = context.rate.wait_needed(found.key_prefix) if context.rate is not None else 0.0
        if wait > 0:
            assert context.rate is not None
            log.warning("open311.rate_limited", system=found.system, key_prefix=found.key_prefix)
            raise Open311Error(400, [(429, f"api_key: over its rate of {context.rate.per_second:g} requests a "
                                           "second; try again after Retry-After seconds")],
                               headers={"Retry-After": retry_after(wait)})
        problem = form_problem(request.state) if request is not None else ""
        if problem:
            parameter, _, message = problem.partition(": ")
            raise bad([(parameter, message)])
        return found

    @app.get("/discovery.{fmt}", responses=answers(DiscoveryOut), response_class=Response)
    def discovery(fmt: Format) -> Response:
        """Service discovery: where this endpoint is and what it speaks."""
        checked(fmt, None)
        endpoint = catalogue().open311
        return answer(fmt, "discovery", {
            "changeset": changeset(), "contact": endpoint.contact, "key_service": endpoint.key_service,
            "endpoints": [{
                "specification": SPECIFICATION, "url": f"{context.public_base_url.rstrip('/')}{MOUNT}",
                "changeset": changeset(), "type": "production", "formats": ["text/xml", "application/json"],
            }],
        })

    @app.get("/services.{fmt}", responses=answers(list[ServiceOut]), response_class=Response)
    def services(fmt: Format, jurisdiction_id: Annotated[Text, Query()] = None) -> Response:
        """The council's services (no API key needed)."""
        return answer(checked(fmt, jurisdiction_id), "services", service_list(catalogue()))

    @app.get("/services/{service_code}.{fmt}", responses=answers(ServiceDefinitionOut), response_class=Response)
    def definition(service_code: str, fmt: Format, jurisdiction_id: Annotated[Text, Query()] = None) -> Response:
        """A service's attributes: the questions its form asks, in order (no API key needed)."""
        checked(fmt, jurisdiction_id)
        if service_code not in catalogue().services:
            raise not_found("service_code", f"no service {service_code[:100]!r} here; GET services.xml lists them")
        return answer(fmt, "service_definition", service_definition(catalogue(), service_code))

    @app.post("/requests.{fmt}", responses=answers(list[CreatedOut]), response_class=Response)
    def post_request(
        request: Request, fmt: Format, items: Annotated[list[tuple[str, str]], Depends(_form_items)],
        api_key: Annotated[Text, Form()] = None, jurisdiction_id: Annotated[Text, Form()] = None,
        service_code: Annotated[Text, Form()] = None, lat: Annotated[Text, Form()] = None,
        long: Annotated[Text, Form()] = None, address_string: Annotated[Text, Form()] = None,
        address_id: Annotated[Text, Form()] = None, email: Annotated[Text, Form()] = None,
        device_id: Annotated[Text, Form()] = None, account_id: Annotated[Text, Form()] = None,
        first_name: Annotated[Text, Form()] = None, last_name: Annotated[Text, Form()] = None,
        phone: Annotated[Text, Form()] = None, description: Annotated[Text, Form()] = None,
        media_url: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        """Report a problem: ``attribute[code]=value`` for each question (``attribute[code][]`` for each value of a
        multivaluelist). Answered with the service_request_id once the case is recorded; the same report sent again
        gets the same id."""
        checked(fmt, jurisdiction_id)
        who = caller(api_key or request.query_params.get("api_key"), request)
        form = ReportForm(
            service_code=given(service_code), lat=given(lat), long=given(long),
            address_string=given(address_string), address_id=given(address_id), email=given(email),
            first_name=given(first_name), last_name=given(last_name), phone=given(phone),
            description=given(description), media_urls=media_url or [], items=items,
        )
        return answer(fmt, "service_requests", [{"service_request_id": _take_report(context, who, form)}])

    @app.get("/requests.{fmt}", responses=answers(list[RequestOut]), response_class=Response)
    def get_requests(
        fmt: Format, api_key: Annotated[Text, Query()] = None, jurisdiction_id: Annotated[Text, Query()] = None,
        service_request_id: Annotated[Text, Query(description="Comma list; overrides the other filters")] = None,
        service_code: Annotated[Text, Query(description="Comma list")] = None,
        status: Annotated[Text, Query(description="Comma list of open, closed")] = None,
        start_date: Annotated[Text, Query()] = None, end_date: Annotated[Text, Query()] = None,
    ) -> Response:
        """Your system's requests: by id, or those requested in a window of at most 90 days (default the last
        90), newest first, at most 1,000."""
        checked(fmt, jurisdiction_id)
        who = caller(api_key)
        ids = given(service_request_id)
        if ids is not None:
            cases = find_cases(context.store, who.system, [part.strip() for part in ids.split(",")])
        else:
            start, end = _request_window(given(start_date), given(end_date))
            wanted_status, wanted_codes = given(status), given(service_code)
            statuses = spec_statuses(wanted_status) if wanted_status is not None else None
            if wanted_status is not None and statuses is None:
                raise bad([("status", "must be open, closed, or both comma-separated")])
            codes = {part.strip() for part in wanted_codes.split(",") if part.strip()} if wanted_codes else None
            cases = search_cases(context.store, who.system, start=start, end=end, service_codes=codes,
                                 statuses=statuses)
        return answer(fmt, "service_requests", request_views(context.store, catalogue(), cases))

    @app.get("/requests/{service_request_id}.{fmt}", responses=answers(list[RequestOut]), response_class=Response)
    def get_request(service_request_id: str, fmt: Format, api_key: Annotated[Text, Query()] = None,
                    jurisdiction_id: Annotated[Text, Query()] = None) -> Response:
        """One of your system's requests."""
        checked(fmt, jurisdiction_id)
        who = caller(api_key)
        cases = find_cases(context.store, who.system, [service_request_id])
        if not cases:
            raise not_found("service_request_id", "no such request from your system")
        return answer(fmt, "service_requests", request_views(context.store, catalogue(), cases))

    @app.get("/tokens/{token}.{fmt}", responses=answers(list[CreatedOut]), response_class=Response)
    def token(token: str, fmt: Format, jurisdiction_id: Annotated[Text, Query()] = None) -> Response:
        """Never needed here: every report is answered with its service_request_id at once, never a token."""
        checked(fmt, jurisdiction_id)
        raise not_found("token", "this endpoint issues no tokens: a report is answered with its service_request_id")

    @app.get("/servicerequestupdates.{fmt}", responses=answers(list[UpdateOut]), response_class=Response)
    def get_updates(fmt: Format, api_key: Annotated[Text, Query()] = None,
                    jurisdiction_id: Annotated[Text, Query()] = None,
                    start_date: Annotated[Text, Query()] = None, end_date: Annotated[Text, Query()] = None) -> Response:
        """Every status change and public note recorded for your system's requests in the window (both dates, at
        most 90 days apart; neither: the last 24 hours), each with its updated_datetime inside the window."""
        checked(fmt, jurisdiction_id)
        who = caller(api_key)
        start, end = _updates_window(given(start_date), given(end_date))
        return answer(fmt, "service_request_updates", updates_between(context.store, who.system, start, end))

    @app.post("/servicerequestupdates.{fmt}", responses=answers(list[PostedUpdateOut]), response_class=Response)
    def post_update(
        request: Request, fmt: Format,
        api_key: Annotated[Text, Form()] = None, jurisdiction_id: Annotated[Text, Form()] = None,
        update_id: Annotated[Text, Form()] = None, service_request_id: Annotated[Text, Form()] = None,
        status: Annotated[Text, Form()] = None, updated_datetime: Annotated[Text, Form()] = None,
        description: Annotated[Text, Form()] = None, first_name: Annotated[Text, Form()] = None,
        last_name: Annotated[Text, Form()] = None, email: Annotated[Text, Form()] = None,
        phone: Annotated[Text, Form()] = None, media_url: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        """A resident's comment, or reopening, on one of your system's requests. Answered with its update_id once
        it is recorded; the same update_id sent again gets the same answer and adds nothing."""
        checked(fmt, jurisdiction_id)
        who = caller(api_key or request.query_params.get("api_key"), request)
        form = UpdateForm(
            update_id=given(update_id), service_request_id=given(service_request_id), status=given(status),
            updated_datetime=given(updated_datetime), description=given(description),
            first_name=given(first_name), last_name=given(last_name),
            media_urls=tuple(url.strip() for url in media_url or [] if url.strip()),
        )
        return answer(fmt, "service_request_updates", [{"update_id": _take_update(context, who, form)}])

    return app


async def _form_items(request: Request) -> list[tuple[str, str]]:
    """Every (name, value) of the form FastAPI parsed (files, as a private report's photos, are not taken)."""
    form = await request.form()
    return [(name, value) for name, value in form.multi_items() if isinstance(value, str)]


def _take_report(context: Open311Context, who: Caller, form: ReportForm) -> str:
    event = report_event(context.intake.catalogue, who.system, form, utc_now())
    known = find_cases(context.store, who.system, [event.case.case_id])
    if known:
        log.info("open311.report_sent_again", case_id=event.case.case_id, system=who.system)
        return reference_of(known[0].id)
    try:
        receipt = context.intake.accept(event, via="open311", actor=who.actor)
    except (DuplicateEventConflict, IntakeRejected) as refused:
        again = _sent_again(context, who, event, refused)
        if again is None:
            raise bad([(_parameter_of(refused.field), refused.message)]) from None
        return again
    if not receipt.duplicate:
        context.after_accept()
    return reference_of(receipt.case_pk)


def _sent_again(context: Open311Context, who: Caller, event: CaseCreated, refused: IntakeRejected) -> str | None:
    """A concurrent copy of the same report got there first: its case's reference."""
    if refused.status_code != 409:
        return None
    known = find_cases(context.store, who.system, [event.case.case_id])
    return reference_of(known[0].id) if known else None


def _take_update(context: Open311Context, who: Caller, form: UpdateForm) -> str:
    problems, moment = check_update(form)
    if problems or moment is None:
        raise bad(problems)
    assert form.service_request_id is not None
    cases = find_cases(context.store, who.system, [form.service_request_id])
    if not cases:
        raise not_found("service_request_id", "no such request from your system")
    [case] = cases
    try:
        event = resident_update(who.system, case.case_id, CaseStatus(case.status), form, moment)
    except ValidationError as exc:
        raise bad([("first_name" if "author" in map(str, error["loc"]) else "description",
                    error["msg"].removeprefix("Value error, "))
                   for error in exc.errors(include_url=False, include_input=False)]) from None
    except ValueError as exc:
        parameter, _, message = str(exc).partition(": ")
        raise bad([(parameter, message)]) from None
    try:
        receipt: Receipt | None = context.intake.accept(event, via="open311", actor=who.actor)
    except DuplicateEventConflict:
        receipt = None  # the same update_id sent again, reading differently now: the first one stands
        log.info("open311.update_sent_again", case_id=case.case_id, system=who.system)
    except IntakeRejected as refused:
        raise bad([(_parameter_of(refused.field), refused.message)]) from None
    if receipt is not None and not receipt.duplicate:
        context.after_accept()
    return str(event.event_id)


def _parameter_of(field_name: str) -> str:
    return {"case.service_code": "service_code", "case.case_id": "service_request_id"}.get(field_name, field_name)


def _updates_window(start_text: str | None, end_text: str | None) -> tuple[datetime, datetime]:
    if start_text is None and end_text is None:
        now = utc_now()
        return now - DEFAULT_UPDATES_WINDOW, now
    if start_text is None or end_text is None:
        missing = "start_date" if start_text is None else "end_date"
        raise bad([(missing, "required with the other: give both start_date and end_date, or neither")])
    return _bounded(_moment("start_date", start_text), _moment("end_date", end_text))


def _request_window(start_text: str | None, end_text: str | None) -> tuple[datetime, datetime]:
    start = _moment("start_date", start_text) if start_text else None
    end = _moment("end_date", end_text) if end_text else None
    if start is None:
        end = end or utc_now()
        start = end - LONGEST_WINDOW
    elif end is None:
        end = start + LONGEST_WINDOW
    return _bounded(start, end)


def _bounded(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if end < start:
        raise bad([("end_date", "earlier than start_date")])
    if end - start > LONGEST_WINDOW:
        raise bad([("end_date", "more than 90 days after start_date")])
    return start, end


def _moment(parameter: str, text: str) -> datetime:
    try:
        return parse_w3c(text)
    except ValueError as exc:
        raise bad([(parameter, str(exc))]) from None
