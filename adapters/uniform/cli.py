"""``broker uniform``: commands for integration engineers working with a Uniform target."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from adapters.common.cli import save_lookups, target_adapter, warn_not_offered
from adapters.uniform.code_lists import CHECKED_LISTS

uniform_app = typer.Typer(help="Uniform (Idox) targets: code lists.", no_args_is_help=True)
console = Console()


@uniform_app.command("codes")
def codes(
    list_name: Annotated[str | None, typer.Argument(
        metavar="LIST", help="A code list, e.g. SRRECTYPE, SRRECHOW, SRCUSTTYPE, SRCLOSEACT, SRKIND.")] = None,
    target: Annotated[str, typer.Option(help="The Uniform target's name in routes.yaml.")] = "uniform",
    save: Annotated[bool, typer.Option(help=f"Save the lists the mapping uses ({', '.join(CHECKED_LISTS)}) as "
                                            "<target>.lookups.yaml beside the mappings, so `broker check` reports "
                                            "mapping codes Uniform does not know.")] = False,
) -> None:
    """Show a Uniform code list (GetCnCodeList), or save the ones `broker check` compares the mapping with."""
    if list_name is None and not save:
        console.print("[red]Name a code list (e.g. SRRECTYPE), or give --save.[/red]")
        raise typer.Exit(2)
    from rich.table import Table

    from adapters.uniform.adapter import UniformAdapter
    from broker.sdk import DeliveryError

    adapter, path = target_adapter(console, target, "uniform", "Uniform", UniformAdapter)
    try:
        shown = adapter.code_list(list_name.upper()) if list_name else None
        saved = adapter.saved_lookups() if save else None
    except DeliveryError as exc:
        console.print(f"[red]Uniform did not give its codes: {exc.reason}: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    finally:
        adapter.close()
    if shown is not None:
        table = Table("code", "text", title=list_name.upper() if list_name else None)
        for value, text in shown.items():
            table.add_row(value, text)
        console.print(table)
    if saved is not None:
        lists, not_offered = saved
        warn_not_offered(console, "Uniform", not_offered,
                         "it was not saved and `broker check` does not check the codes it would hold")
        if not lists:
            console.print("[red]Uniform offered none of the code lists: nothing saved.[/red]")
            raise typer.Exit(1)
        save_lookups(path, lists, f"Code lists of Uniform target {target!r}, from GetCnCodeList. "
                                  "Refresh with `broker uniform codes --save`.")
        console.print(f"Saved {', '.join(lists)} to {path}; `broker check` now reports codes Uniform does not know.")
