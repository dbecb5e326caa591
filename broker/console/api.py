"""The console's operations as JSON under ``/v1/console``, for scripts: same session, roles and CSRF header."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from broker.api.ratelimit import retry_after
from broker.errors import CasebridgeError
from broker.failures import queries as failures
from broker.failures.queries import FailedPage, FailureGroup, FilterFields, ListFilter
from broker.store.cases import HistoryEntry

from . import queries
from .accounts import Officer, TooManyAttempts
from .detail import (
    MessageDetail,
    create_anyway,
    discard_with_reason,
    link_one,
    message_detail,
    replay_one,
    timeline_for,
)
from .edits import EditRefused, edit_message
from .replay_jobs import DryRun, JobProgress, cancel_job, dry_run, progress, start_job
from .security import (
    CSRF_HEADER,
    MAX_ID,
    ConsoleContext,
    RowId,
    api_officer,
    check_csrf,
    check_role,
    set_session_cookie,
)


class SignIn(BaseModel):
    name: str = Field(max_length=64)
    password: str = Field(max_length=1000)


class SessionOut(BaseModel):
    name: str
    role: str
    csrf_token: str = Field(description=f"Send it back in the {CSRF_HEADER} header on every POST.")


class Outcome(BaseModel):
    outcome: str


class EditIn(BaseModel):
    fields: dict[str, str] = Field(description="Dotted field names (case.location.easting) and their new values; "
                                               "an empty value removes the field.")


class DiscardIn(BaseModel):
    reason: str = ""


class LinkIn(BaseModel):
    external_ref: str = Field(min_length=1, max_length=200, description="The LOB system's reference for the record.")


class Selection(FilterFields):
    """Ids, or a filter; empty filter fields match everything (open failures only)."""

    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list)
    batch_size: int = Field(50, ge=1, le=500)
    pause_seconds: float = Field(2.0, ge=0, le=600)

    def where(self) -> ListFilter:
        return ListFilter(**self.model_dump(include=set(FilterFields.model_fields)), ids=tuple(self.ids) or None)


class CaseTimeline(BaseModel):
    case_id: str
    source: str
    entries: list[HistoryEntry]


def console_api(context: ConsoleContext) -> APIRouter:
    router = APIRouter(prefix="/v1/console", tags=["console"])

    def who(request: Request) -> Officer:
        return api_officer(context, request)

    def may(request: Request, role: str, token: str | None) -> Officer:
        officer = who(request)
        check_csrf(officer, token)
        check_role(officer, role)
        return officer

    def refused(exc: CasebridgeError, status_code: int = 409) -> HTTPException:
        errors = getattr(exc, "errors", None)
        return HTTPException(status_code, detail={"error": "refused", "message": str(exc),
                                                  **({"errors": errors} if errors else {})})

    @router.post("/session", response_model=SessionOut)
    def create_session(request: Request, response: Response, body: SignIn) -> SessionOut:
        """Sign in; the session cookie is set, and the CSRF token for later POSTs is returned."""
        try:
            token = context.sign_in(body.name, body.password, request)
        except TooManyAttempts as exc:
            raise HTTPException(429, detail={"error": "too_many_attempts", "message": str(exc)},
                                headers={"Retry-After": retry_after(exc.retry_after)}) from exc
        if not token:
            raise HTTPException(401, detail={"error": "unauthorized", "message": "wrong name or password"})
        set_session_cookie(context, request, response, token)
        from .accounts import officer_for

        officer = officer_for(context.store, token)
        assert officer is not None
        return SessionOut(name=officer.name, role=officer.role, csrf_token=officer.csrf_token)

    @router.get("/failed", response_model=FailedPage)
    def list_failed(request: Request, target: str | None = None, service: str | None = None,
                    error_class: str | None = None, reason: str | None = None, cause: str | None = None,
                    case_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
                    state: str = "open", page: Annotated[int, Query(ge=1, le=failures.MAX_PAGE)] = 1,
                    size: Annotated[int, Query(ge=1, le=500)] = 50) -> FailedPage:
        """Failed messages, newest first, one page at a time (state: open, replayed, linked, discarded or all)."""
        who(request)
        where = ListFilter(target=target, service=service, error_class=error_class, reason=reason, cause=cause,
                           case_id=case_id, since=since, until=until, state=None if state == "all" else state)
        return failures.failed_page(context.store, where, page, size)

    @router.get("/groups", response_model=list[FailureGroup])
    def groups(request: Request, target: str | None = None) -> list[FailureGroup]:
        """Open failures grouped by target, error class, reason and normalised message."""
        who(request)
        return failures.failure_groups(context.store, ListFilter(target=target))

    @router.get("/failed/{failed_id}", response_model=MessageDetail)
    def detail(request: Request, failed_id: RowId) -> MessageDetail:
        """One failed message; personal data only for operators."""
        found = message_detail(context.store, failed_id, personal=who(request).can("operator"))
        if found is None:
            raise HTTPException(404, detail={"error": "not_found", "message": f"no failed message {failed_id}"})
        return found

    @router.post("/failed/{failed_id}/replay", response_model=Outcome)
    def replay(request: Request, failed_id: RowId,
               x_csrf_token: Annotated[str | None, Header()] = None) -> Outcome:
        officer = may(request, "operator", x_csrf_token)
        try:
            return Outcome(outcome=replay_one(context.store, context.intake, failed_id, actor=officer.actor,
                                              wake_relay=context.wake_relay))
        except CasebridgeError as exc:
            raise refused(exc) from exc

    @router.post("/failed/{failed_id}/edit", response_model=Outcome)
    def edit_and_replay(request: Request, failed_id: RowId, body: EditIn,
                        x_csrf_token: Annotated[str | None, Header()] = None) -> Outcome:
        """Correct fields (validated against the canonical model), keep both versions, and replay."""
        officer = may(request, "operator", x_csrf_token)
        try:
            edit_message(context.store, failed_id, body.fields, actor=officer.actor)
            return Outcome(outcome=replay_one(context.store, context.intake, failed_id, actor=officer.actor,
                                              wake_relay=context.wake_relay))
        except EditRefused as exc:
            raise refused(exc, 422) from exc
        except CasebridgeError as exc:
            raise refused(exc) from exc

    @router.post("/failed/{failed_id}/link", response_model=Outcome)
    def link(request: Request, failed_id: RowId, body: LinkIn,
             x_csrf_token: Annotated[str | None, Header()] = None) -> Outcome:
        """Record a failed delivery as delivered to a record found in the LOB system (``delivery_unconfirmed``:
        the create may have landed); the case's later events go to that record."""
        officer = may(request, "operator", x_csrf_token)
        try:
            return Outcome(outcome=link_one(context.store, failed_id, external_ref=body.external_ref,
                                            actor=officer.actor,
                                            wake_relay=context.wake_relay))
        except CasebridgeError as exc:
            raise refused(exc) from exc

    @router.post("/failed/{failed_id}/create-anyway", response_model=Outcome)
    def create_anyway_route(request: Request, failed_id: RowId,
                            x_csrf_token: Annotated[str | None, Header()] = None) -> Outcome:
        """Send a create that may have landed without asking the target first, on the officer's word that the
        case is not in the LOB system."""
        officer = may(request, "operator", x_csrf_token)
        try:
            return Outcome(outcome=create_anyway(context.store, context.intake, failed_id, actor=officer.actor,
                                                 wake_relay=context.wake_relay))
        except CasebridgeError as exc:
            raise refused(exc) from exc

    @router.post("/failed/{failed_id}/discard", response_model=Outcome)
    def discard(request: Request, failed_id: RowId, body: DiscardIn,
                x_csrf_token: Annotated[str | None, Header()] = None) -> Outcome:
        officer = may(request, "operator", x_csrf_token)
        try:
            discard_with_reason(context.store, failed_id, actor=officer.actor, reason=body.reason,
                                wake_relay=context.wake_relay)
        except CasebridgeError as exc:
            raise refused(exc, 422 if not body.reason.strip() else 409) from exc
        return Outcome(outcome="discarded")

    @router.post("/replay-jobs/dry-run", response_model=DryRun)
    def preview(request: Request, body: Selection) -> DryRun:
        """How many open failures a replay would send, and to which targets."""
        who(request)
        return dry_run(context.store, body.where())

    @router.post("/replay-jobs", response_model=JobProgress, status_code=202)
    def start(request: Request, body: Selection, x_csrf_token: Annotated[str | None, Header()] = None) -> Any:
        officer = may(request, "operator", x_csrf_token)
        job_id = start_job(context.store, body.where(), actor=officer.actor, description="replay through the API",
                           batch_size=body.batch_size, pause_seconds=body.pause_seconds)
        if context.runner is not None:
            context.runner.wake.set()
        return progress(context.store, job_id)

    @router.get("/replay-jobs/{job_id}", response_model=JobProgress)
    def job(request: Request, job_id: RowId) -> JobProgress:
        who(request)
        found = progress(context.store, job_id)
        if found is None:
            raise HTTPException(404, detail={"error": "not_found", "message": f"no replay {job_id}"})
        return found

    @router.post("/replay-jobs/{job_id}/cancel", response_model=Outcome)
    def cancel(request: Request, job_id: RowId, x_csrf_token: Annotated[str | None, Header()] = None) -> Outcome:
        may(request, "operator", x_csrf_token)
        return Outcome(outcome="cancelled" if cancel_job(context.store, job_id) else "not running")

    @router.get("/cases", response_model=list[CaseTimeline])
    def cases(request: Request, q: str) -> list[CaseTimeline]:
        """Cases by case id, LOB reference, or (operators only) reporter email, each with its timeline."""
        officer = who(request)
        result = []
        for case in queries.search_cases(context.store, q, by_email=officer.can("operator")):
            found = timeline_for(context.store, case.id, personal=officer.can("operator"))
            if found:
                result.append(CaseTimeline(case_id=case.case_id, source=case.source, entries=found[1]))
        return result

    return router
