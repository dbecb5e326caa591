"""What the adapters' own commands share: finding a target's adapter in routes.yaml, and saving its code lists
beside the mappings, where ``broker check`` compares the mapping with them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console

from broker.adapter import Adapter

AdapterT = TypeVar("AdapterT", bound=Adapter[Any])


def target_adapter(console: Console, target: str, adapter: str, label: str,
                   kind: type[AdapterT]) -> tuple[AdapterT, Path]:
    """The adapter of ``target``, which routes.yaml must give the ``adapter`` adapter, and the path of its saved
    code lists. Any other name exits with status 2, naming the targets of that kind there are."""
    from broker.cli.main import load_settings
    from broker.config.loader import load_configuration
    from broker.plugins import build_adapter

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
    with path.open("w", encoding="utf-8") as file:
        file.write(f"# {origin}\n")
        yaml.safe_dump(dict(codes), file, sort_keys=True)
