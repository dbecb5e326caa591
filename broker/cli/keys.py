"""``broker keys``: API keys for client systems."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from broker.cli.common import load_settings

if TYPE_CHECKING:
    from broker.store.database import Store

keys_app = typer.Typer(help="API keys of client systems (CRM, portal, apps).", no_args_is_help=True)
console = Console()


def _store() -> Store:
    from broker.store.database import Store

    settings = load_settings()
    store = Store(settings.database_url)
    store.migrate()
    return store


@keys_app.command("create")
def create(
    system: Annotated[str, typer.Argument(help="The client system's name, as it appears in envelopes' `source`.")],
) -> None:
    """Create an API key for SYSTEM. The key is printed once; only its hash is stored."""
    from broker.store import keys

    store = _store()
    key = keys.create_key(store, system)
    console.print(f"API key for {system!r} (shown once, keep it secret):", style="bold")
    typer.echo(key)


@keys_app.command("list")
def list_keys() -> None:
    """List API keys (prefixes only)."""
    from rich.table import Table

    from broker.store import keys

    table = Table("system", "key prefix", "created", "revoked")
    for row in keys.list_keys(_store()):
        table.add_row(escape(row.system), escape(row.key_prefix) + "…", f"{row.created_at:%Y-%m-%d %H:%M}",
                      f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "")
    console.print(table)
