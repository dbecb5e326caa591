"""What the adapters' own commands share: finding a target's adapter in routes.yaml, saving its code lists beside
the mappings, where ``broker check`` compares the mapping with them, and warning of what the server does not
offer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # the commands import what they need when they run: `broker --help` stays quick
    from adapters.common.soap_client import NotOffered
    from broker.plugins.contract import Adapter

AdapterT = TypeVar("AdapterT", bound="Adapter[Any]")


def target_adapter(console: Console, target: str, adapter: str, label: str,
                   kind: type[AdapterT]) -> tuple[AdapterT, Path]:
    """The adapter of ``target``, which routes.yaml must give the ``adapter`` adapter, and the path of its saved
    code lists. Any other name exits with status 2, naming the targets of that kind there are."""
    from broker.cli.common import load_settings
    from broker.config.loader import load_configuration
    from broker.plugins.registry import build_adapter

    settings = load_settings()
    configuration = load_configuration(settings.mappings_dir)
    spec = configuration.targets.get(target)
    if spec is None or spec.definition.adapter != adapter:
        names = [name for name, known in configuration.targets.items() if known.definition.adapter == adapter]
        console.print(f"[red]No {label} target {target!r} in routes.yaml ({label} targets: "
                      f"{', '.join(names) or 'none'}).[/red]")
        raise typer.Exit(2)
    built = build_adapter(adapter, target, spec.settings, spec.mapping)
    if not isinstance(built, kind):
        raise TypeError(f"the {adapter!r} adapter is {type(built).__name__}, not {kind.__name__}")
    return built, settings.mappings_dir / f"{target}.lookups.yaml"


def save_lookups(path: Path, codes: Mapping[str, Any], origin: str) -> None:
    """Write ``codes`` as ``<target>.lookups.yaml``, headed by a comment saying where they came from."""
    import yaml

    with path.open("w", encoding="utf-8") as file:
        file.write(f"# {origin}\n")
        yaml.safe_dump(dict(codes), file, sort_keys=True)


def warn_not_offered(console: Console, system: str, not_offered: Sequence[NotOffered], consequence: str) -> None:
    """One warning line per operation or code list the server does not offer; ``consequence`` says what follows
    (``its codes were not saved and are not checked``)."""
    for gap in not_offered:
        console.print(f"[yellow]Warning: {system} does not offer {escape(gap.name)} ({escape(gap.reason)}); "
                      f"{consequence}.[/yellow]", soft_wrap=True)
