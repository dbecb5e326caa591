"""The console's pages: server-rendered HTML at ``/console``, every form carrying a CSRF token."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from broker.api.ratelimit import retry_after
from broker.errors import CasebridgeError
from broker.failures import queries as failures
from broker.failures.queries import LONDON, BadFilter, ListFilter, day_range
from broker.operations.status import size_warning, store_size

from . import queries
from .accounts import Officer, TooManyAttempts, sign_out
from .detail import create_anyway, discard_with_reason, link_one, message_detail, replay_one, timeline_for
from .edits import FIELDS, EditRefused, edit_message, field_value
from .replay_jobs import cancel_job, dry_run, progress, recent_jobs, start_job
from .security import (
    CSRF_FIELD,
    MAX_ID,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    ConsoleContext,
    RowId,
    check_csrf,
    check_role,
    clear_session_cookie,
    is_secure,
    page_officer,
    set_session_cookie,
)

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals.update(plain_reason=failures.plain_reason, field_value=field_value, urlencode=urlencode)
# Autoescaping makes any markup in a message plain text; tojson would show it as \u003c escapes instead.
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)
templates.env.filters["when"] = lambda value: value.astimezone(LONDON).strftime("%d %b %Y %H:%M") \
    if value else "—"


def list_filter(request: Request) -> ListFilter:
    """The failed list's filters from a query string or a submitted form's fields."""
    params = request.query_params
    since, until = dates(params.get("since"), params.get("until"))
    return ListFilter(
        target=params.get("target") or None, service=params.get("service") or None,
        error_class=params.get("error_class") or None, reason=params.get("reason") or None,
        cause=params.get("cause"), case_id=params.get("case_id") or None, since=since, until=until,
        state=None if params.get("state") == "all" else (params.get("state") or "open"),
    )


def dates(since: Any, until: Any) -> tuple[Any, Any]:
    """The since/until fields as a day range; a page in words (422) naming the one that is not a date."""
    try:
        return day_range(str(since or "") or None, str(until or "") or None)
    except BadFilter as exc:
        raise HTTPException(422, detail={"error": "validation_failed", "message": str(exc)}) from exc


def console_router(context: ConsoleContext) -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)

    def officer(request: Request) -> Officer:
        return page_officer(context, request)

    def render(request: Request, name: str, who: Officer | None, status_code: int = 200, **values: Any) -> Response:
        return templates.TemplateResponse(request, name, {"officer": who, "csrf_field": CSRF_FIELD,
                                                          "targets": context.targets, **values},
                                          status_code=status_code)

    def done_then(request: Request, page: str, message: str) -> Response:
        """Back to ``page``, which will say ``message`` once (a flash kept with the session, not in the URL)."""
        context.flashes.put(request, message)
        return RedirectResponse(page, status_code=303)

    def allowed(request: Request, who: Officer, role: str, token: str | None) -> None:
        check_csrf(who, token)
        check_role(who, role)

    @router.get("/sign-in")
    def sign_in_page(request: Request, error: str | None = None) -> Response:
        token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
        response = render(request, "sign_in.html", None, error=error, sign_in_token=token)
        response.set_cookie(SIGN_IN_COOKIE, token, path="/console", httponly=True, samesite="strict",
                            secure=is_secure(context, request))
        return response

    @router.post("/sign-in")
    def sign_in_submit(request: Request, name: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
                       csrf_token: Annotated[str, Form()] = "") -> Response:
        expected = request.cookies.get(SIGN_IN_COOKIE)
        if not expected or not csrf_token or not secrets.compare_digest(expected, csrf_token):
            raise HTTPException(403, detail={"error": "csrf", "message": "reload the sign-in page and try again"})
        try:
            token = context.sign_in(name.strip(), password, request)
        except TooManyAttempts as exc:
            refused = render(request, "sign_in.html", None, status_code=429, error=str(exc), sign_in_token=expected)
            refused.headers["Retry-After"] = retry_after(exc.retry_after)
            return refused
        if not token:
            return render(request, "sign_in.html", None, status_code=401, sign_in_token=expected,
                          error="The name or password is not right.")
        response = RedirectResponse("/console", status_code=303)
        set_session_cookie(context, request, response, token)
        return response

    @router.post("/sign-out")
    def sign_out_submit(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
        check_csrf(officer(request), csrf_token)
        sign_out(context.store, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/console/sign-in", status_code=303)
        clear_session_cookie(response)
        return response

    @router.get("", response_class=HTMLResponse)
    def dashboard(request: Request) -> Response:
        who = officer(request)
        targets, schedules = queries.dashboard(context.store, context.targets, context.schedules)
        size = store_size(context.store)
        return render(request, "dashboard.html", who, summaries=targets, schedules=schedules,
                      jobs=recent_jobs(context.store, 5), store_megabytes=size / 1_048_576,
                      store_warning=size_warning(size, context.store_size_limit_bytes))

    @router.get("/failed", response_class=HTMLResponse)
    def failed_list(request: Request, page: int = 1) -> Response:
        who = officer(request)
        where = list_filter(request)
        return render(request, "failed_list.html", who, where=where, query=where.as_query(),
                      result=failures.failed_page(context.store, where, page), form=request.query_params)

    @router.get("/deliveries", response_class=HTMLResponse)
    def deliveries(request: Request, target: str = "", view: str = "pending", page: int = 1) -> Response:
        who = officer(request)
        if target not in context.targets or view not in queries.DELIVERY_VIEWS:
            raise HTTPException(404, detail={"error": "not_found", "message": "no such target or list"})
        return render(request, "deliveries.html", who, target=target, view=view,
                      result=queries.deliveries_page(context.store, target, view, page))

    @router.get("/groups", response_class=HTMLResponse)
    def groups(request: Request) -> Response:
        who = officer(request)
        where = list_filter(request)
        return render(request, "groups.html", who, groups=failures.failure_groups(context.store, where),
                      where=where, form=request.query_params)

    @router.get("/failed/{failed_id}", response_class=HTMLResponse)
    def failed_detail(request: Request, failed_id: RowId) -> Response:
        who = officer(request)
        done = context.flashes.take(request)
        detail = message_detail(context.store, failed_id, personal=who.can("operator"))
        if detail is None:
            raise HTTPException(404, detail={"error": "not_found", "message": f"no failed message {failed_id}"})
        return render(request, "failed_detail.html", who, detail=detail, fields=FIELDS, done=done, errors={},
                      values={})

    @router.post("/failed/{failed_id}/replay")
    def replay_submit(request: Request, failed_id: RowId, csrf_token: Annotated[str, Form()] = "") -> Response:
        who = officer(request)
        allowed(request, who, "operator", csrf_token)
        try:
            outcome = replay_one(context.store, context.intake, failed_id, actor=who.actor,
                                 wake_relay=context.wake_relay)
        except CasebridgeError as exc:
            outcome = f"not replayed: {exc}"
        return done_then(request, f"/console/failed/{failed_id}", outcome)

    @router.post("/failed/{failed_id}/edit")
    async def edit_submit(request: Request, failed_id: RowId) -> Response:
        who = officer(request)
        form = {key: str(value) for key, value in (await request.form()).items()}
        allowed(request, who, "operator", form.get(CSRF_FIELD))
        try:
            diff = edit_message(context.store, failed_id, form, actor=who.actor)
            outcome = replay_one(context.store, context.intake, failed_id, actor=who.actor,
                                 wake_relay=context.wake_relay)
        except EditRefused as exc:
            detail = message_detail(context.store, failed_id, personal=True)
            return render(request, "failed_detail.html", who, status_code=422, detail=detail, fields=FIELDS,
                          done=None, errors=exc.errors or {"message": str(exc)}, values=form)
        except CasebridgeError as exc:
            return done_then(request, f"/console/failed/{failed_id}", f"not replayed: {exc}")
        changed = ", ".join(change["field"].rsplit(".", 1)[-1] for change in diff) or "nothing"
        return done_then(request, f"/console/failed/{failed_id}", f"edited ({changed}) and replayed: {outcome}")

    @router.post("/failed/{failed_id}/link")
    def link_submit(request: Request, failed_id: RowId, csrf_token: Annotated[str, Form()] = "",
                    external_ref: Annotated[str, Form()] = "") -> Response:
        who = officer(request)
        allowed(request, who, "operator", csrf_token)
        try:
            outcome = link_one(context.store, failed_id, external_ref=external_ref, actor=who.actor,
                               wake_relay=context.wake_relay)
        except CasebridgeError as exc:
            detail = message_detail(context.store, failed_id, personal=True)
            return render(request, "failed_detail.html", who, status_code=422, detail=detail, fields=FIELDS,
                          done=None, errors={"external_ref": str(exc)}, values={})
        return done_then(request, f"/console/failed/{failed_id}", outcome)

    @router.post("/failed/{failed_id}/create-anyway")
    def create_anyway_submit(request: Request, failed_id: RowId, csrf_token: Annotated[str, Form()] = "") -> Response:
        who = officer(request)
        allowed(request, who, "operator", csrf_token)
        try:
            outcome = create_anyway(context.store, context.intake, failed_id, actor=who.actor,
                                    wake_relay=context.wake_relay)
        except CasebridgeError as exc:
            outcome = f"not sent: {exc}"
        return done_then(request, f"/console/failed/{failed_id}", outcome)

    @router.post("/failed/{failed_id}/discard")
    def discard_submit(request: Request, failed_id: RowId, csrf_token: Annotated[str, Form()] = "",
                       reason: Annotated[str, Form()] = "") -> Response:
        who = officer(request)
        allowed(request, who, "operator", csrf_token)
        try:
            discard_with_reason(context.store, failed_id, actor=who.actor, reason=reason, wake_relay=context.wake_relay)
        except CasebridgeError as exc:
            detail = message_detail(context.store, failed_id, personal=True)
            return render(request, "failed_detail.html", who, status_code=422, detail=detail, fields=FIELDS,
                          done=None, errors={"reason": str(exc)}, values={})
        return done_then(request, f"/console/failed/{failed_id}", "discarded")

    @router.post("/replay/preview", response_class=HTMLResponse)
    async def replay_preview(request: Request) -> Response:
        who = officer(request)
        form = await request.form()
        allowed(request, who, "operator", str(form.get(CSRF_FIELD, "")))
        where, description = _selection(request, form)
        return render(request, "replay_preview.html", who, preview=dry_run(context.store, where),
                      description=description, hidden=[(k, str(v)) for k, v in form.multi_items()
                                                       if k != CSRF_FIELD])

    @router.post("/replay/start")
    async def replay_start(request: Request) -> Response:
        who = officer(request)
        form = await request.form()
        allowed(request, who, "operator", str(form.get(CSRF_FIELD, "")))
        where, description = _selection(request, form)
        job_id = start_job(context.store, where, actor=who.actor, description=description,
                           batch_size=_number(form.get("batch_size"), 50),
                           pause_seconds=_seconds(form.get("pause_seconds"), 2.0))
        if context.runner is not None:
            context.runner.wake.set()
        return RedirectResponse(f"/console/replay/{job_id}", status_code=303)

    @router.get("/replay/{job_id}", response_class=HTMLResponse)
    def replay_job(request: Request, job_id: RowId) -> Response:
        who = officer(request)
        job = progress(context.store, job_id)
        if job is None:
            raise HTTPException(404, detail={"error": "not_found", "message": f"no replay {job_id}"})
        return render(request, "replay_job.html", who, job=job)

    @router.post("/replay/{job_id}/cancel")
    def replay_cancel(request: Request, job_id: RowId, csrf_token: Annotated[str, Form()] = "") -> Response:
        who = officer(request)
        allowed(request, who, "operator", csrf_token)
        cancel_job(context.store, job_id)
        return RedirectResponse(f"/console/replay/{job_id}", status_code=303)

    @router.get("/cases", response_class=HTMLResponse)
    def case_search(request: Request, q: str = "") -> Response:
        who = officer(request)
        found = queries.search_cases(context.store, q, by_email=who.can("operator"))
        if len(found) == 1:
            return RedirectResponse(f"/console/cases/{found[0].id}", status_code=303)
        return render(request, "case_search.html", who, q=q, found=found)

    @router.get("/cases/{case_pk}", response_class=HTMLResponse)
    def case_timeline(request: Request, case_pk: str) -> Response:
        who = officer(request)
        found = timeline_for(context.store, case_pk, personal=who.can("operator"))
        if found is None:
            raise HTTPException(404, detail={"error": "not_found", "message": "no such case"})
        case, entries = found
        return render(request, "case_timeline.html", who, case=case, entries=entries)

    return router


def _selection(request: Request, form: Any) -> tuple[ListFilter, str]:
    """What a replay covers: ticked ids, or the filter the list or group was showing."""
    ids = tuple(int(value) for value in form.getlist("ids") if str(value).isdigit() and 0 < int(value) <= MAX_ID)
    if form.get("scope") != "all":  # nothing ticked selects nothing, never everything
        return ListFilter(ids=ids), f"{len(ids)} selected message(s)"
    since, until = dates(form.get("since"), form.get("until"))
    where = ListFilter(target=str(form.get("target") or "") or None, service=str(form.get("service") or "") or None,
                       error_class=str(form.get("error_class") or "") or None,
                       reason=str(form.get("reason") or "") or None,
                       cause=str(form["cause"]) if "cause" in form else None,
                       case_id=str(form.get("case_id") or "") or None, since=since, until=until)
    parts = [f"{key} {value}" for key, value in where.as_query().items() if key != "state"]
    return where, "every open failure" + (" with " + ", ".join(parts) if parts else "")


def _seconds(value: Any, default: float) -> float:
    try:
        return max(0.0, float(str(value)))
    except (TypeError, ValueError):
        return default


def _number(value: Any, default: int) -> int:
    try:
        return max(0, int(float(str(value))))
    except (TypeError, ValueError):
        return default
