"""``broker users``: support console accounts."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from broker.cli.common import load_settings, open_store
from broker.console.roles import ROLES

users_app = typer.Typer(help="Support console accounts (roles: viewer, operator, admin).", no_args_is_help=True)
console = Console(stderr=True)
PASSWORD_ENV = "CASEBRIDGE_NEW_USER_PASSWORD"


@users_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The sign-in name, e.g. j.smith.")],
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")] = "viewer",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard "
                                                 "input (for scripts).")] = False,
) -> None:
    """Create a console account. The password is prompted for, read from stdin, or taken from
    CASEBRIDGE_NEW_USER_PASSWORD."""
    from broker.console.accounts import AccountError, create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    else:
        password = typer.prompt("Password (at least 12 characters)", hide_input=True, confirmation_prompt=True)
    store = open_store(load_settings())
    try:
        create_user(store, name, role, password)
    except AccountError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    finally:
        store.dispose()
    console.print(f"Account {name!r} created with the {role} role. Sign in at /console.")


@users_app.command("list")
def list_command() -> None:
    """List console accounts and their roles."""
    from rich.table import Table

    from broker.console.admin import list_users

    store = open_store(load_settings())
    table = Table("name", "role", "created", "disabled")
    for user in list_users(store):
        table.add_row(user.name, user.role, f"{user.created_at:%Y-%m-%d %H:%M}",
                      f"{user.disabled_at:%Y-%m-%d %H:%M}" if user.disabled_at else "")
    store.dispose()
    Console().print(table)


@users_app.command("disable")
def disable_command(name: Annotated[str, typer.Argument(help="The account to disable; it is signed out.")]) -> None:
    """Disable a console account (its sessions end at once)."""
    import getpass

    from broker.console.admin import AdminRefused, list_users, set_disabled

    store = open_store(load_settings())
    try:
        found = [user for user in list_users(store) if user.name == name]
        if not found:
            raise AdminRefused(f"no account named {name!r}")
        set_disabled(store, found[0].id, True, actor=f"user:{getpass.getuser()}", own_id=-1)
    except AdminRefused as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    finally:
        store.dispose()
    console.print(f"Account {name!r} disabled.")
