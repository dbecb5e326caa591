"""``broker case``: what happened to a case, from the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from broker.cli.common import load_settings, open_store

if TYPE_CHECKING:
    from broker.store.database import Store
    from broker.store.tables import CaseRecord

case_app = typer.Typer(help="Inspect cases: their deliveries and their audit timeline.", no_args_is_help=True)
console = Console()

SourceOption = Annotated[str | None, typer.Option(help="The sending system, when several used the same case id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _find(case_id: str, source: str | None) -> tuple[Store, CaseRecord]:
    from broker.store.cases import find_case

    store = open_store(load_settings())
    found = find_case(store, case_id, source)
    if not found:
        console.print(f"[red]No case {escape(repr(case_id))}{f' from {escape(repr(source))}' if source else ''}.[/red]")
        raise typer.Exit(1)
    if len(found) > 1:
        sources = ", ".join(case.source for case in found)
        console.print(f"[red]Case id {escape(repr(case_id))} is used by several systems ({escape(sources)}): "
                      "add --source.[/red]")
        raise typer.Exit(1)
    return store, found[0]


@case_app.command("history")
def history(case_id: str, source: SourceOption = None, as_json: JsonOption = False) -> None:
    """Print CASE_ID's audit timeline: received, validated, routed, delivered or failed."""
    from rich.table import Table

    from broker.store.cases import case_history

    store, case = _find(case_id, source)
    timeline = case_history(store, case)
    if as_json:
        typer.echo(timeline.model_dump_json(indent=2))
        return
    table = Table("when (UTC)", "step", "actor", "target", "detail",
                  title=escape(f"Case {case.case_id} from {case.source}"))
    for entry in timeline.entries:
        detail = ", ".join(f"{key}={value}" for key, value in entry.detail.items() if value not in (None, [], {}))
        table.add_row(f"{entry.at:%Y-%m-%d %H:%M:%S}",
                      *map(escape, (entry.step, entry.actor, entry.target or "", detail)))
    console.print(table)


@case_app.command("show")
def show(case_id: str, source: SourceOption = None, as_json: JsonOption = False) -> None:
    """Print CASE_ID's status, targets, deliveries and LOB references."""
    from rich.table import Table

    from broker.store.cases import case_view

    store, case = _find(case_id, source)
    view = case_view(store, case)
    if as_json:
        typer.echo(view.model_dump_json(indent=2))
        return
    console.print(f"Case [bold]{escape(view.case_id)}[/bold] from {escape(view.source)}: {view.service_code}, "
                  f"status {view.status}")
    table = Table("event", "target", "mode", "state", "attempts", "LOB reference", "last error")
    for delivery in view.deliveries:
        table.add_row(*map(escape, (delivery.event_type, delivery.target, delivery.mode, delivery.state,
                                    str(delivery.attempts), delivery.external_ref or "", delivery.last_error or "")))
    console.print(table)
