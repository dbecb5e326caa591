"""``broker failed``: the failed-message store, for support staff."""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from broker.cli.common import load_settings, open_store

if TYPE_CHECKING:
    from broker.failures.queries import ListFilter
    from broker.store.database import Store

failed_app = typer.Typer(
    help="Failed messages: list them, read why they failed, replay them, link them to a LOB record or discard "
         "them. Every action is recorded in the case's history with who did it.",
    no_args_is_help=True,
)
console = Console()

TargetOption = Annotated[str | None, typer.Option(help="Only this target.")]
ServiceOption = Annotated[str | None, typer.Option(help="Only this service code ('highways.*' for a family).")]
ErrorClassOption = Annotated[str | None, typer.Option("--error-class", help="permanent, transient, unexpected, "
                                                                               "unconfirmed, poison or invalid.")]
ReasonOption = Annotated[str | None, typer.Option(help="Only this machine-readable reason, e.g. http_422.")]
CauseOption = Annotated[str | None, typer.Option(help="Only this cause: the error text with its particulars "
                                                      "blanked, as `broker failed list --json` and the console's "
                                                      "failures by cause show it.")]
CaseOption = Annotated[str | None, typer.Option("--case-id", help="Only this case ('CRM-12*' for a pattern).")]
SinceOption = Annotated[datetime | None, typer.Option(help="Only failures since this time (UTC), e.g. 2026-11-01.")]
UntilOption = Annotated[datetime | None, typer.Option(help="Only failures before this time (UTC), e.g. "
                                                           "2026-11-02.")]
ActorOption = Annotated[str | None, typer.Option(help="Who is doing this, for the audit trail (default: your "
                                                      "login name).")]


def _store() -> Store:
    return open_store(load_settings())


def _actor(actor: str | None) -> str:
    return f"user:{actor or getpass.getuser()}"


def _filter(*, target: str | None, service: str | None, error_class: str | None, reason: str | None,
            cause: str | None, case_id: str | None, since: datetime | None, until: datetime | None,
            state: str | None = "open") -> ListFilter:
    """The same filter the console's failed list uses."""
    from datetime import UTC

    from broker.failures.queries import ListFilter

    def aware(moment: datetime | None) -> datetime | None:
        return moment.replace(tzinfo=moment.tzinfo or UTC) if moment else None

    return ListFilter(target=target, service=service, error_class=error_class, reason=reason, cause=cause,
                      case_id=case_id, since=aware(since), until=aware(until), state=state)


@failed_app.command("list")
def list_command(
    target: TargetOption = None, service: ServiceOption = None, error_class: ErrorClassOption = None,
    reason: ReasonOption = None, cause: CauseOption = None, case_id: CaseOption = None, since: SinceOption = None,
    until: UntilOption = None,
    state: Annotated[str, typer.Option(help="open, replayed, linked, discarded or all.")] = "open",
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """List failed messages, newest first (open ones unless --state says otherwise)."""
    from rich.table import Table

    from broker.failures.queries import list_failed

    where = _filter(target=target, service=service, error_class=error_class, reason=reason, cause=cause,
                    case_id=case_id, since=since, until=until, state=None if state == "all" else state)
    rows = list_failed(_store(), where, limit=limit)
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
    from broker.delivery.reconciliation import REASON as UNRESOLVED
    from broker.failures.queries import show_failed

    view = show_failed(_store(), failed_id)
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
    reason: ReasonOption = None, cause: CauseOption = None, case_id: CaseOption = None, since: SinceOption = None,
    until: UntilOption = None, actor: ActorOption = None,
    create_anyway: Annotated[bool, typer.Option(
        "--create-anyway", help="For a create that may have landed (delivery_unconfirmed): you checked the LOB "
                                "system and the case is not there, so send it without asking the target first. "
                                "Only with ids.")] = False,
) -> None:
    """Send failed messages through again: by id, or every open one matching the filters.

    A delivery whose earlier attempt may have reached the target asks the target first, so replaying never
    creates a second record; --create-anyway skips that question, on your word.
    """
    from rich.progress import Progress

    from broker.config.loader import load_configuration
    from broker.errors import CasebridgeError
    from broker.failures.actions import replay
    from broker.failures.queries import list_failed
    from broker.intake.transaction import Intake

    settings = load_settings()
    store = open_store(settings)
    where = _filter(target=target, service=service, error_class=error_class, reason=reason, cause=cause,
                    case_id=case_id, since=since, until=until)
    if not failed_ids and where.is_empty:
        console.print("[red]Give ids, or at least one filter (--target, --service, --error-class, --reason, "
                      "--cause, --case-id, --since, --until).[/red]")
        raise typer.Exit(2)
    if create_anyway and not failed_ids:
        console.print("[red]--create-anyway takes ids: check each case in the LOB system first.[/red]")
        raise typer.Exit(2)
    ids = failed_ids or [row.id for row in list_failed(store, where, limit=100_000)]
    intake = Intake(store, load_configuration(settings.mappings_dir))
    problems = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("Replaying", total=len(ids))
        for failed_id in ids:
            try:
                outcome = replay(store, intake, failed_id, actor=_actor(actor), create_anyway=create_anyway)
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
    from broker.errors import CasebridgeError
    from broker.failures.actions import link_to_record

    try:
        outcome = link_to_record(_store(), failed_id, external_ref=external_ref, actor=_actor(actor))
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
    from broker.errors import CasebridgeError
    from broker.failures.actions import discard

    store = _store()
    problems = 0
    for failed_id in failed_ids:
        try:
            discard(store, failed_id, actor=_actor(actor), reason=reason)
            console.print(f"{failed_id}: discarded")
        except CasebridgeError as exc:
            problems += 1
            console.print(f"[red]{failed_id}: {escape(str(exc))}[/red]")
    if problems:
        raise typer.Exit(1)
