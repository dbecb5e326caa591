"""What every ``broker`` command shares: the settings (checked, logging configured) and a broker built from them.

Imported by each command group; it imports nothing heavy itself, so ``broker --help`` stays quick.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from broker.runtime.process import Broker
    from broker.settings import Settings
    from broker.store.database import Store

console = Console(stderr=True)


def load_settings() -> Settings:
    """The settings, or every problem with them and exit code 2."""
    from broker.config.check import check_settings
    from broker.logging import configure_logging

    settings, problems = check_settings()
    if settings is None:
        for problem in problems:
            console.print(f"[red]{escape(str(problem))}[/red]")
        raise typer.Exit(2)
    configure_logging(settings.log_level)
    return settings


def open_store(settings: Settings) -> Store:
    """The store, ready to read: the embedded SQLite default migrates itself; a PostgreSQL store that was never
    migrated (or is behind) is one clear line saying what to run, and exit code 2."""
    from broker.store.database import Store, schema_is_current

    store = Store(settings.database_url)
    if not store.is_postgres:
        store.migrate()
    elif not schema_is_current(store.engine):
        store.dispose()
        console.print("[red]The store's tables are missing or older than this release: run `broker db upgrade` "
                      "first.[/red]", soft_wrap=True)
        raise typer.Exit(2)
    return store


def require_mappings(settings: Settings) -> None:
    """A clear word, not a traceback, for a command run where there is no configuration."""
    from pathlib import Path

    if not Path(settings.mappings_dir).is_dir():
        console.print(f"[red]No {escape(str(settings.mappings_dir))}/ folder here ({escape(str(Path.cwd()))}): run "
                      "`broker init` to write a starter configuration, or set CASEBRIDGE_MAPPINGS_DIR.[/red]",
                      soft_wrap=True)
        raise typer.Exit(2)


def build_broker(settings: Settings, *, migrate: bool, stop: threading.Event | None = None) -> Broker:
    """The broker for ``settings``; a configuration with problems is listed (``broker check``) and exit code 2."""
    from broker.errors import ConfigError
    from broker.runtime.process import Broker

    require_mappings(settings)
    try:
        broker = Broker(settings, stop=stop)
    except ConfigError as exc:
        console.print("[red]The configuration has problems (run `broker check`):[/red]")
        for problem in exc.problems:
            console.print(f"  {escape(str(problem))}")
        raise typer.Exit(2) from exc
    if migrate:
        broker.migrate()
    return broker
