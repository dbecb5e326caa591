"""``broker uniform``: commands for integration engineers working with a Uniform target."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from adapters.uniform.adapter import CHECKED_LISTS, UniformAdapter
from broker.errors import DeliveryError

uniform_app = typer.Typer(help="Uniform (Idox) targets: code lists.", no_args_is_help=True)
console = Console()


def _adapter(target: str) -> tuple[UniformAdapter, str]:
    from broker.cli.main import load_settings
    from broker.config.loader import load_configuration
    from broker.plugins import build_adapter

    settings = load_settings()
    configuration = load_configuration(settings.mappings_dir)
    spec = configuration.targets.get(target)
    if spec is None or spec.definition.adapter != "uniform":
        names = [name for name, t in configuration.targets.items() if t.definition.adapter == "uniform"]
        console.print(f"[red]No Uniform target {target!r} in routes.yaml (Uniform targets: "
                      f"{', '.join(names) or 'none'}).[/red]")
        raise typer.Exit(2)
    adapter = build_adapter("uniform", target, spec.settings, spec.mapping)
    assert isinstance(adapter, UniformAdapter)
    return adapter, str(settings.mappings_dir / f"{target}.lookups.yaml")


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
    adapter, path = _adapter(target)
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
        with open(path, "w", encoding="utf-8") as file:
            file.write(f"# Code lists of Uniform target {target!r}, from GetCnCodeList. "
                       "Refresh with `broker uniform codes --save`.\n")
            yaml.safe_dump(saved, file, sort_keys=True)
        console.print(f"Saved {', '.join(saved)} to {path}; `broker check` now reports codes Uniform does not know.")
