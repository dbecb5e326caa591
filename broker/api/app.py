"""The HTTP API: CRMs post cases and events, and ask what became of them."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from broker.api.errors import install_error_handlers
from broker.api.fast_intake import FastIntake, json_body
from broker.api.limits import RequestGate, caller_of
from broker.api.ratelimit import RateLimiter
from broker.errors import IntakeRejected
from broker.intake.batcher import IntakeBatcher
from broker.intake.transaction import Intake, Receipt, Submission
from broker.model.events import SCHEMA_VERSION, CaseCreated, FollowUpEvent
from broker.open311.app import Open311Context, install_open311
from broker.open311.body import GATE as OPEN311_GATE
from broker.operations.health import Health
from broker.operations.health import live as health_live
from broker.operations.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from broker.operations.metrics import exposition
from broker.store import keys
from broker.store.cases import CaseHistory, CaseView, case_history, case_view, find_case
from broker.store.database import Store
from broker.store.keys import Caller
from broker.store.tables import CaseRecord

API_VERSION = "1"
#: Swagger UI's files, vendored (scripts/vendor-swagger-ui.sh): /docs needs no network beyond the broker.
SWAGGER_UI_DIR = Path(__file__).parent / "static" / "swagger-ui"
SWAGGER_UI_PATH = "/docs/static"


@dataclass
class ApiContext:
    store: Store
    intake: Intake
    #: Called after an event commits, so the outbox relay publishes without waiting for its next poll.
    after_accept: Callable[[], None]
    max_body_bytes: int = 1_048_576
    #: Where clients reach the API (status URLs are built on it, never on the request's Host header).
    public_base_url: str = "http://127.0.0.1:8080"
    #: Requests a second allowed per API key on average (0: no limit), and the burst allowed above that.
    rate_per_second: float = 100.0
    rate_burst: int = 1000
    #: What ``/health/ready`` checks (None: the store alone).
    health: Health | None = None
    #: Group commit: events of requests arriving together share one transaction (None: one each, on a thread).
    batcher: IntakeBatcher | None = None
    #: Keyed requests handled at once at most; past it, 503 with Retry-After at once (0: no bound).
    max_in_flight: int = 0
    #: Well-formed envelopes are taken without FastAPI's request machinery (the same answers; see fast_intake).
    fast_intake: bool = True


class ReceiptOut(BaseModel):
    case_id: str
    event_id: str
    status_url: str
    duplicate: bool
    targets: list[str]


class Problem(BaseModel):
    error: str
    message: str
    errors: list[dict[str, str]] | None = None


_bearer = HTTPBearer(auto_error=False, description="An API key made with `broker keys create <system>`.")
_PROBLEMS: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "Malformed JSON"},
    401: {"model": Problem, "description": "Missing or unknown API key"},
    413: {"model": Problem, "description": "Body too large"},
    422: {"model": Problem, "description": "Invalid envelope; each field at fault is named"},
    429: {"model": Problem, "description": "Over the API key's rate; wait for the seconds in Retry-After"},
    503: {"model": Problem, "description": "The store cannot be reached; try again after Retry-After seconds"},
}


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Casebridge",
        version=f"{API_VERSION}.0 (canonical schema {SCHEMA_VERSION})",
        description="Post council cases and their events; follow their delivery to line-of-business systems. "
        "The same envelopes may be published over AMQP (see docs/asyncapi.yaml).",
        docs_url=None,  # served below, from the package's own copy of Swagger UI rather than a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.mount(SWAGGER_UI_PATH, StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="Casebridge API",
            swagger_js_url=f"{SWAGGER_UI_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI_PATH}/favicon-32x32.png",
        )

    install_error_handlers(app)
    if context.fast_intake:  # added before the gate, so inside it: the key and the body are checked first
        app.add_middleware(FastIntake, accept=lambda event, who, key: accept(event, who, key),
                           write_receipt=lambda receipt: json_body(receipt_out(receipt).model_dump(mode="json")))
    known_keys = keys.KeyCache(context.store)
    app.add_middleware(RequestGate, max_bytes=context.max_body_bytes, authenticate=known_keys.authenticate,
                       cached=known_keys.cached, rate=RateLimiter(context.rate_per_second, context.rate_burst),
                       interfaces=[OPEN311_GATE], max_in_flight=context.max_in_flight)
    base_url = context.public_base_url.rstrip("/")
    install_open311(app, Open311Context(context.store, context.intake, context.after_accept, base_url,
                                        RateLimiter(context.rate_per_second, context.rate_burst)))

    async def caller(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
        found = caller_of(request.state)  # the gate checked the key before the body was read
        if found is None and credentials:
            found = await run_in_threadpool(known_keys.authenticate, credentials.credentials)
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail={"error": "unauthorized", "message": "missing or unknown API key"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    def own_case(case_id: str, who: Caller) -> CaseRecord:
        found = find_case(context.store, case_id, source=who.system)
        if not found:
            raise IntakeRejected("case_id", f"no case {case_id!r} from {who.system!r}", status_code=404)
        return found[0]

    def receipt_out(receipt: Receipt) -> ReceiptOut:
        """Built from the configured base URL and the case id escaped as a path segment: nothing here can fail
        once the event is committed, and nothing the client sent (its Host header) is echoed back."""
        return ReceiptOut(
            case_id=receipt.case_id, event_id=receipt.event_id, duplicate=receipt.duplicate,
            status_url=f"{base_url}/v1/cases/{quote(receipt.case_id, safe='')}", targets=receipt.targets,
        )

    async def accept(event: CaseCreated | FollowUpEvent, who: Caller, idempotency_key: str | None) -> Receipt:
        if event.source != who.system:
            raise IntakeRejected("source", f"this API key belongs to {who.system!r}, not {event.source!r}",
                                 status_code=403)
        submission = Submission(event, "http", who.actor, idempotency_key)
        if context.batcher is not None and context.batcher.is_alive():  # answered once its transaction commits
            outcome = await asyncio.wrap_future(context.batcher.submit(submission))
        else:
            outcome = (await run_in_threadpool(context.intake.accept_many, [submission]))[0]
            if isinstance(outcome, Receipt) and not outcome.duplicate:
                context.after_accept()
        if isinstance(outcome, IntakeRejected):
            raise outcome
        return outcome

    @app.post("/v1/cases", status_code=202, response_model=ReceiptOut, responses=_PROBLEMS, tags=["cases"])
    async def post_case(
        event: CaseCreated,
        who: Annotated[Caller, Depends(caller)],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> ReceiptOut:
        """Submit a new case (a `case.created` envelope). 202 means it is durably recorded."""
        return receipt_out(await accept(event, who, idempotency_key))

    @app.post("/v1/cases/{case_id}/events", status_code=202, response_model=ReceiptOut, responses=_PROBLEMS,
              tags=["cases"])
    async def post_event(
        case_id: str,
        event: FollowUpEvent,
        who: Annotated[Caller, Depends(caller)],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> ReceiptOut:
        """A later event for a case: `case.updated`, `case.note_added`, `case.status_changed` or `case.closed`."""
        if event.case_id != case_id:
            raise IntakeRejected("case.case_id", f"{event.case_id!r} does not match the case in the URL {case_id!r}")
        return receipt_out(await accept(event, who, idempotency_key))

    @app.get("/v1/cases/{case_id}", response_model=CaseView, responses=_PROBLEMS, tags=["cases"])
    def get_case(case_id: str, who: Annotated[Caller, Depends(caller)]) -> CaseView:
        """The case's status, the targets it was routed to, each delivery's state and the LOB references."""
        return case_view(context.store, own_case(case_id, who))

    @app.get("/v1/cases/{case_id}/history", response_model=CaseHistory, responses=_PROBLEMS, tags=["cases"])
    def get_history(case_id: str, who: Annotated[Caller, Depends(caller)]) -> CaseHistory:
        """The audit timeline: received, validated, routed, delivered or failed, with times and actors."""
        return case_history(context.store, own_case(case_id, who))

    health = context.health or Health(context.store)

    @app.get("/health", tags=["operations"], include_in_schema=False)
    @app.get("/health/live", tags=["operations"])
    def live() -> dict[str, str]:
        """The process is up and answering."""
        return health_live()

    @app.get("/health/ready", tags=["operations"], response_model=None,
             responses={503: {"description": "a check failed; the body says which and why"}})
    def ready() -> JSONResponse:
        """The store is reachable and migrated, RabbitMQ is reachable where used, the outbox relay is going round."""
        ok, body = health.ready()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Metrics in Prometheus' text format."""
        return PlainTextResponse(exposition(), media_type=METRICS_CONTENT_TYPE)

    return app
