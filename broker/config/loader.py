"""Load and cross-check everything in ``mappings/``: catalogue, routes, targets and their mapping files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.config.models import RoutingTable, ServiceCatalogue, TargetDefinition, service_matches
from broker.config.yamlsource import YamlDocument, expand_environment, load_yaml
from broker.errors import ConfigError, Problem

CATALOGUE_FILE = "services.yaml"
ROUTES_FILE = "routes.yaml"


@dataclass
class Target:
    """A configured target: its definition, expanded settings and mapping file contents."""

    name: str
    definition: TargetDefinition
    settings: dict[str, Any]
    mapping: dict[str, Any]
    mapping_document: YamlDocument | None = None
    #: The mapping file's ``batch:`` section (CSV format and SFTP server of a batch target), kept apart from
    #: the adapter's own mapping; validated by ``broker.batch``.
    batch: dict[str, Any] | None = None


@dataclass
class Configuration:
    catalogue: ServiceCatalogue
    routing: RoutingTable
    targets: dict[str, Target] = field(default_factory=dict)
    routes_document: YamlDocument | None = None


def load_configuration(mappings_dir: Path) -> Configuration:
    """Load the mappings directory; raise ConfigError listing every problem found (not just the first)."""
    problems: list[Problem] = []
    configuration = collect_configuration(mappings_dir, problems)
    if problems or configuration is None:
        raise ConfigError(problems)
    return configuration


def collect_configuration(mappings_dir: Path, problems: list[Problem]) -> Configuration | None:
    catalogue_doc = load_yaml(mappings_dir / CATALOGUE_FILE, problems)
    routes_doc = load_yaml(mappings_dir / ROUTES_FILE, problems)
    catalogue = catalogue_doc.validate(ServiceCatalogue, problems) if catalogue_doc else None
    routing = routes_doc.validate(RoutingTable, problems) if routes_doc else None
    if catalogue is None or routing is None or routes_doc is None:
        return None
    _check_routes(routing, catalogue, routes_doc, problems)
    targets = {
        name: target
        for name, definition in routing.targets.items()
        if (target := _load_target(name, definition, mappings_dir, routes_doc, problems)) is not None
    }
    return Configuration(catalogue=catalogue, routing=routing, targets=targets, routes_document=routes_doc)


def _check_routes(
    routing: RoutingTable, catalogue: ServiceCatalogue, doc: YamlDocument, problems: list[Problem]
) -> None:
    for index, route in enumerate(routing.routes):
        for position, delivery in enumerate(route.deliver):
            if delivery.target not in routing.targets:
                problems.append(Problem(
                    doc.file,
                    doc.line_of(("routes", index, "deliver", position, "target")),
                    f"route {route.name!r} delivers to unknown target {delivery.target!r}"
                    f" (targets: {', '.join(sorted(routing.targets)) or 'none'})",
                ))
        for position, pattern in enumerate(route.services):
            if not any(service_matches(pattern, code) for code in catalogue.services):
                problems.append(Problem(
                    doc.file,
                    doc.line_of(("routes", index, "services", position)),
                    f"route {route.name!r}: service pattern {pattern!r} matches no service in {CATALOGUE_FILE}",
                ))


def _load_target(
    name: str,
    definition: TargetDefinition,
    mappings_dir: Path,
    routes_doc: YamlDocument,
    problems: list[Problem],
) -> Target | None:
    try:
        settings = expand_environment(definition.settings)
    except KeyError as exc:
        problems.append(Problem(
            routes_doc.file,
            routes_doc.line_of(("targets", name, "settings")),
            f"target {name!r}: environment variable {exc.args[0]} is not set and has no default",
        ))
        return None
    mapping_name = definition.mapping or f"{name}.yaml"
    mapping_path = mappings_dir / mapping_name
    mapping_doc: YamlDocument | None = None
    mapping: dict[str, Any] = {}
    batch: Any = None
    if mapping_path.exists():
        mapping_doc = load_yaml(mapping_path, problems)
        if mapping_doc is not None:
            if not isinstance(mapping_doc.data, dict):
                problems.append(Problem(mapping_doc.file, 1, "a mapping file must be a YAML mapping"))
            else:
                mapping = dict(mapping_doc.data)
                batch = mapping.pop("batch", None)
    elif definition.mapping:
        problems.append(Problem(
            routes_doc.file,
            routes_doc.line_of(("targets", name, "mapping")),
            f"target {name!r}: mapping file {mapping_name} does not exist",
        ))
    return Target(name, definition, settings, mapping, mapping_doc, batch if isinstance(batch, dict) else None)
