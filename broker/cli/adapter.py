"""``broker adapter``: for integration engineers writing an adapter for a LOB system."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

adapter_app = typer.Typer(help="Write an adapter for a LOB system (see docs/adapters/writing-an-adapter.md).",
                          no_args_is_help=True)


@adapter_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="The adapter's name, e.g. waste_tracker (its entry point name).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the package folder.")] = Path("."),
    title: Annotated[str | None, typer.Option(help="The LOB system's name for people, e.g. 'Waste Tracker'.")] = None,
) -> None:
    """Write an installable adapter package, casebridge-<name>: entry points, config and mapping models, the
    adapter, a simulator as its sandbox, contract tests that pass as they are, and a README."""
    from broker.sdk.scaffold import ScaffoldRefused, scaffold

    try:
        folder = scaffold(name, directory, title=title)
    except ScaffoldRefused as refused:
        typer.secho(str(refused), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"Wrote {folder}. Next: pip install -e {folder} && pytest {folder / 'tests'}")
