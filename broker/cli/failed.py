"""``broker failed``: the failed-message store, for support staff."""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from broker.delivery.reconciliation import REASON as UNRESOLVED
from broker.errors import CasebridgeError
from broker.failures.actions import FailedFilter, discard, link_to_record, list_failed, replay, show_failed
from broker.intake.transaction import Intake
from broker.settings import Settings
from broker.store.database import Store
from broker.transport.connection import topology_for

failed_app = typer.Typer(
    help="Failed messages: list them, read why they failed, replay them or discard them. "
         "Every replay and discard is recorded in the case's history with who did it.",
    no_args_is_help=True,
)
console = Console()

TargetOption = Annotated[str | None, typer.Option(help="Only this target.")]
ServiceOption = Annotated[str | None, typer.Option(help="Only this service code ('highways.*' for a family).")]
ErrorClassOption = Annotated[str | None, typer.Option("--error-class", help="permanent, transient, unexpected "
                                                                               "or invalid.")]
ReasonOption = Annotated[str | None, typer.Option(help="Only this machine-readable reason, e.g. http_422.")]
SinceOption = Annotated[datetime | None, typer.Option(help="Only failures since this time (UTC), e.g. 2026-11-01.")]
ActorOption = Annotated[str | None, typer.Option(help="Who is doing this, for the audit trail (default: your "
                                                      "login name).")]


def _settings() -> Settings:
    from broker.cli.main import load_settings

    return load_settings()


def _actor(actor: str | None) -> str:
    return f"user:{actor or getpass.getuser()}"


def _filter(target: str | None, service: str | None, error_class: str | None, reason: str | None,
            since: datetime | None, state: str | None = "open") -> FailedFilter:
    from datetime import UTC

    return FailedFilter(target=target, service=service, error_class=error_class, reason=reason,
                        since=since.replace(tzinfo=since.tzinfo or UTC) if since else None, state=state)


@failed_app.command("list")
def list_command(
    target: TargetOption = None, service: ServiceOption = None, error_class: ErrorClassOption = None,
    reason: ReasonOption = None, since: SinceOption = None,
    state: Annotated[str, typer.Option(help="open, replayed, linked, discarded or all.")] = "open",
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """List failed messages, newest first (open ones unless --state says otherwise)."""
    store = Store(_settings().database_url)
    rows = list_failed(store, _filter(target, service, error_class, reason, since,
                                      None if state == "all" else state), limit=limit)
    if as_json:
        for row in rows:
            typer.echo(row.model_dump_json())
        return
    table = Table("id", "last failed (UTC)", "stage", "target", "case", "service", "class", "reason", "attempts",
                  "state", title=f"{len(rows)} failed message(s)")
    for row in rows:
        table.add_row(str(row.id), f"{row.last_failed_at:%Y-%m-%d %H:%M}", *map(escape, (
            row.stage, row.target or "", row.case_id or "", row.service_code or "", row.error_class, row.reason,
            str(row.attempts), row.state)))
    console.print(table)


@failed_app.command("show")
def show_command(
    failed_id: Annotated[int, typer.Argument(help="The failed message's id (from `broker failed list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one failed message: why it failed, how often, and the message itself for intake failures."""
    view = show_failed(Store(_settings().database_url), failed_id)
    if view is None:
        console.print(f"[red]No failed message {failed_id}.[/red]")
        raise typer.Exit(1)
    if as_json:
        typer.echo(view.model_dump_json(indent=2))
        return
    for label, value in view.model_dump(exclude={"raw_body", "attempt_history"}).items():
        if value not in (None, ""):
            console.print(f"[bold]{label.replace('_', ' ')}:[/bold] {escape(str(value))}")
    if view.attempt_history:
        console.print("[bold]attempts:[/bold]")
        for attempt in view.attempt_history:
            console.print(f"  {attempt.at:%Y-%m-%d %H:%M:%S}  {attempt.step:<16} {attempt.reason}: {attempt.message}",
                          markup=False, highlight=False)
    if view.reason == UNRESOLVED and view.state == "open":
        console.print("[bold]what you can do:[/bold] find the case in the LOB system by our reference, then")
        console.print(f"  broker failed link {view.id} <its reference>      if it is there\n"
                      f"  broker failed replay {view.id} --create-anyway    if it is not", markup=False)
    if view.raw_body:
        console.print("[bold]message as received:[/bold]")
        console.print(view.raw_body, markup=False, highlight=False)


@failed_app.command("replay")
def replay_command(
    failed_ids: Annotated[list[int] | None, typer.Argument(help="Ids to replay; or use the filters.")] = None,
    target: TargetOption = None, service: ServiceOption = None, error_class: ErrorClassOption = None,
    reason: ReasonOption = None, since: SinceOption = None, actor: ActorOption = None,
    create_anyway: Annotated[bool, typer.Option(
        "--create-anyway", help="For a create that may have landed (delivery_unconfirmed): you checked the LOB "
                                "system and the case is not there, so send it without asking the target first. "
                                "Only with ids.")] = False,
) -> None:
    """Send failed messages through again: by id, or every open one matching the filters.

    A delivery whose earlier attempt may have reached the target asks the target first, so replaying never
    creates a second record; --create-anyway skips that question, on your word.
    """
    settings = _settings()
    store = Store(settings.database_url)
    where = _filter(target, service, error_class, reason, since)
    if not failed_ids and where.is_empty:
        console.print("[red]Give ids, or at least one filter (--target, --service, --error-class, --reason, "
                      "--since).[/red]")
        raise typer.Exit(2)
    if create_anyway and not failed_ids:
        console.print("[red]--create-anyway takes ids: check each case in the LOB system first.[/red]")
        raise typer.Exit(2)
    ids = failed_ids or [row.id for row in list_failed(store, where, limit=100_000)]
    from broker.config.loader import load_configuration

    topology = topology_for(settings)
    intake = Intake(store, load_configuration(settings.mappings_dir), topology)
    problems = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("Replaying", total=len(ids))
        for failed_id in ids:
            try:
                outcome = replay(store, intake, failed_id, actor=_actor(actor),
                                 exchange=topology.delivery_exchange.name, create_anyway=create_anyway)
                console.print(f"{failed_id}: {escape(outcome)}")
            except CasebridgeError as exc:
                problems += 1
                console.print(f"[red]{failed_id}: {escape(str(exc))}[/red]")
            progress.advance(task)
    console.print(f"Replayed {len(ids) - problems} of {len(ids)}.")
    if problems:
        raise typer.Exit(1)


@failed_app.command("link")
def link_command(
    failed_id: Annotated[int, typer.Argument(help="The failed delivery's id (from `broker failed list`).")],
    external_ref: Annotated[str, typer.Argument(help="The LOB system's reference for the record, e.g. the "
                                                     "Confirm enquiry number.")],
    actor: ActorOption = None,
) -> None:
    """Record a failed delivery as delivered to a record you found in the LOB system.

    For a create that may have landed and could not be confirmed (reason delivery_unconfirmed): look the case
    up in the LOB system; if it is there, link it here, and the case's later events go to that record.
    """
    settings = _settings()
    try:
        outcome = link_to_record(Store(settings.database_url), failed_id, external_ref=external_ref,
                                 actor=_actor(actor), exchange=topology_for(settings).delivery_exchange.name)
    except CasebridgeError as exc:
        console.print(f"{failed_id}: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    console.print(f"{failed_id}: {outcome}", markup=False)


@failed_app.command("discard")
def discard_command(
    failed_ids: Annotated[list[int], typer.Argument(help="Ids to discard.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail (required).")],
    actor: ActorOption = None,
) -> None:
    """Give up on failed messages for good, saying why."""
    settings = _settings()
    store = Store(settings.database_url)
    exchange = topology_for(settings).delivery_exchange.name
    problems = 0
    for failed_id in failed_ids:
        try:
            discard(store, failed_id, actor=_actor(actor), reason=reason, exchange=exchange)
            console.print(f"{failed_id}: discarded")
        except CasebridgeError as exc:
            problems += 1
            console.print(f"[red]{failed_id}: {escape(str(exc))}[/red]")
    if problems:
        raise typer.Exit(1)
