"""The administrators' page: accounts and API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from broker.errors import CasebridgeError

from .accounts import create_user
from .admin import issue_key, list_keys, list_users, revoke_key, set_disabled
from .roles import ROLES
from .security import CSRF_FIELD, ConsoleContext, RowId, check_csrf, check_role, page_officer
from .web import templates


def admin_router(context: ConsoleContext) -> APIRouter:
    router = APIRouter(prefix="/console/admin", include_in_schema=False)

    def page(request: Request, status_code: int = 200, **values: object) -> Response:
        who = page_officer(context, request)
        check_role(who, "admin")
        return templates.TemplateResponse(request, "admin.html", {
            "officer": who, "csrf_field": CSRF_FIELD, "roles": ROLES, "users": list_users(context.store),
            "keys": list_keys(context.store), "error": None, "new_key": None, "done": None, **values,
        }, status_code=status_code)

    def admin(request: Request, token: str) -> str:
        who = page_officer(context, request)
        check_csrf(who, token)
        check_role(who, "admin")
        return who.actor

    def done_then(request: Request, message: str) -> Response:
        context.flashes.put(request, message)  # said once by the next page, never carried in the URL
        return RedirectResponse("/console/admin", status_code=303)

    @router.get("")
    def show(request: Request) -> Response:
        return page(request, done=context.flashes.take(request))

    @router.post("/users")
    def add_user(request: Request, csrf_token: Annotated[str, Form()] = "", name: Annotated[str, Form()] = "",
                 role: Annotated[str, Form()] = "viewer", password: Annotated[str, Form()] = "") -> Response:
        actor = admin(request, csrf_token)
        try:
            create_user(context.store, name.strip(), role, password, actor=actor)
        except CasebridgeError as exc:
            return page(request, 422, error=str(exc))
        return done_then(request, f"Account {name.strip()} created")

    @router.post("/users/{user_id}/disable")
    def disable(request: Request, user_id: RowId, csrf_token: Annotated[str, Form()] = "",
                enable: Annotated[str, Form()] = "") -> Response:
        actor = admin(request, csrf_token)
        try:
            set_disabled(context.store, user_id, not enable, actor=actor, own_id=page_officer(context, request).id)
        except CasebridgeError as exc:
            return page(request, 422, error=str(exc))
        return done_then(request, "Account updated")

    @router.post("/keys")
    def add_key(request: Request, csrf_token: Annotated[str, Form()] = "",
                system: Annotated[str, Form()] = "") -> Response:
        actor = admin(request, csrf_token)
        try:
            key = issue_key(context.store, system, actor=actor)
        except CasebridgeError as exc:
            return page(request, 422, error=str(exc))
        return page(request, new_key=(system.strip(), key))

    @router.post("/keys/{key_id}/revoke")
    def revoke(request: Request, key_id: RowId, csrf_token: Annotated[str, Form()] = "") -> Response:
        actor = admin(request, csrf_token)
        try:
            revoke_key(context.store, key_id, actor=actor)
        except CasebridgeError as exc:
            return page(request, 422, error=str(exc))
        return done_then(request, "Key revoked")

    return router
