"""``broker check``: every problem in settings, mappings and schedules, each with its file and line.

Most problems are errors (the broker would not start on them, or would do the wrong thing). Some are warnings: the
configuration works, but not as safely as it could, and the check says what to change; warnings never fail it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from broker.config.loader import ROUTES_FILE, Configuration, collect_configuration
from broker.config.models import DeliveryMode
from broker.config.yamlsource import load_yaml
from broker.errors import ConfigError, Problem, Severity
from broker.plugins.contract import EVENT_CAPABILITY
from broker.plugins.registry import (
    AdapterConfigInvalid,
    AdapterMappingInvalid,
    UnknownAdapter,
    adapter_class,
    build_adapter,
)
from broker.scheduling.jobs import JOB_OPTIONS, JOBS
from broker.scheduling.schedules import load_schedules
from broker.settings import ENV_PREFIX, Settings


def check_settings() -> tuple[Settings | None, list[Problem]]:
    try:
        return Settings(), []
    except ValidationError as exc:
        return None, [
            Problem(f"environment {ENV_PREFIX}{'_'.join(str(p) for p in error['loc']).upper()}", None, error["msg"])
            for error in exc.errors()
        ]


def check_mappings(mappings_dir: Path) -> tuple[Configuration | None, list[Problem]]:
    problems: list[Problem] = []
    configuration = collect_configuration(mappings_dir, problems)
    if configuration is None:
        return None, problems + _adapter_name_problems(mappings_dir)
    routes_file = str(mappings_dir / ROUTES_FILE)
    for name, target in configuration.targets.items():
        lines = configuration.routes_document.line_of if configuration.routes_document else (lambda _p: None)
        try:
            cls = adapter_class(target.definition.adapter)
        except UnknownAdapter as exc:
            problems.append(Problem(routes_file, lines(("targets", name, "adapter")), f"target {name!r}: {exc}"))
            continue
        try:
            build_adapter(target.definition.adapter, name, target.settings, target.mapping).close()
        except AdapterConfigInvalid as exc:
            for loc, message in exc.errors:
                problems.append(Problem(routes_file, lines(("targets", name, "settings", *loc.split("."))),
                                        f"target {name!r}: settings.{loc}: {message}"))
            continue
        except AdapterMappingInvalid:
            pass  # reported below, with the mapping file's lines
        except Exception as exc:  # an adapter refusing its mapping reports it below with lines
            if not cls.mapping_problems(target.mapping):
                problems.append(Problem(routes_file, lines(("targets", name)), f"target {name!r}: {exc}"))
        document = target.mapping_document
        lookups_file = mappings_dir / f"{name}.lookups.yaml"
        lookups = load_yaml(lookups_file, problems) if lookups_file.exists() else None
        if lookups is not None and isinstance(lookups.data, dict):
            for path, message in cls.unknown_code_problems(target.mapping, lookups.data):
                problems.append(Problem(
                    document.file if document else routes_file, document.line_of(path) if document else None,
                    f"{'.'.join(str(p) for p in path)}: {message} (per {lookups_file.name})",
                ))
        for path, message in cls.mapping_problems(target.mapping):
            problems.append(Problem(
                document.file if document else routes_file,
                document.line_of(path) if document else None,
                f"{'.'.join(str(p) for p in path)}: {message}",
            ))
    problems += _capability_problems(configuration, routes_file)
    problems += _realtime_warnings(configuration, routes_file)
    return configuration, problems


def _capability_problems(configuration: Configuration, routes_file: str) -> list[Problem]:
    """Real-time routes that would send a target events its adapter does not declare it can carry (a case
    update to a create-only Uniform): found here, not as a permanent failure at run time. Batch deliveries are
    written to files by the core, whatever the adapter."""
    document = configuration.routes_document
    problems = []
    for index, route in enumerate(configuration.routing.routes):
        for position, delivery in enumerate(route.deliver):
            target = configuration.targets.get(delivery.target)
            if target is None or delivery.mode is not DeliveryMode.realtime:
                continue
            try:
                cls = adapter_class(target.definition.adapter)
            except UnknownAdapter:  # reported above
                continue
            refused = [event for event in route.events if EVENT_CAPABILITY[event] not in cls.capabilities]
            if not refused:
                continue
            carried = [event.value for event in route.events if event not in refused]
            explicit = document is not None and isinstance(document.data, dict) and \
                "events" in (document.data.get("routes") or [{}])[index]
            path = ("routes", index, "events") if explicit else ("routes", index, "deliver", position, "target")
            advice = (f"limit the route to what it can carry, events: [{', '.join(carried)}], or send them to "
                      "another target") if carried else "send them to another target"
            problems.append(Problem(
                routes_file, document.line_of(path) if document else None,
                f"route {route.name!r} sends {', '.join(event.value for event in refused)} to target "
                f"{delivery.target!r}, whose adapter {target.definition.adapter!r} cannot carry them (capabilities: "
                f"{', '.join(sorted(cls.capabilities))}); {advice}",
            ))
    return problems


def _realtime_warnings(configuration: Configuration, routes_file: str) -> list[Problem]:
    """What each adapter says an operator should know about its target's real-time deliveries (a webhook without
    a look-up, say: exactly once then rests on its receiver honouring ``Idempotency-Key``). Batch deliveries are
    not asked about."""
    realtime = {delivery.target for route in configuration.routing.routes for delivery in route.deliver
                if delivery.mode is DeliveryMode.realtime}
    document = configuration.routes_document
    warnings = []
    for name, target in configuration.targets.items():
        if name not in realtime:
            continue
        try:
            said = adapter_class(target.definition.adapter).realtime_warnings(name, target.settings)
        except UnknownAdapter:  # reported above
            continue
        line = document.line_of(("targets", name)) if document else None
        warnings += [Problem(routes_file, line, message, Severity.warning) for message in said]
    return warnings


def _adapter_name_problems(mappings_dir: Path) -> list[Problem]:
    """Unknown adapter and target names, found even when the rest of routes.yaml does not validate."""
    problems: list[Problem] = []
    document = load_yaml(mappings_dir / ROUTES_FILE, [])
    if document is None or not isinstance(document.data, dict):
        return problems
    targets = document.data.get("targets")
    targets = targets if isinstance(targets, dict) else {}
    routes = document.data.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        deliver = route.get("deliver") if isinstance(route, dict) else None
        for position, delivery in enumerate(deliver if isinstance(deliver, list) else []):
            target = delivery.get("target") if isinstance(delivery, dict) else None
            if isinstance(target, str) and target not in targets:
                line = document.line_of(("routes", index, "deliver", position, "target"))
                problems.append(Problem(document.file, line,
                                        f"route {route.get('name')!r} delivers to unknown target {target!r}"
                                        f" (targets: {', '.join(sorted(targets)) or 'none'})"))
    for name, target in targets.items():
        adapter = target.get("adapter") if isinstance(target, dict) else None
        if isinstance(adapter, str):
            try:
                adapter_class(adapter)
            except UnknownAdapter as exc:
                problems.append(Problem(document.file, document.line_of(("targets", name, "adapter")),
                                        f"target {name!r}: {exc}"))
    return problems


def check_schedules(schedules_dir: Path) -> list[Problem]:
    try:
        load_schedules(schedules_dir, known_jobs=set(JOBS), option_models=JOB_OPTIONS)
    except ConfigError as exc:
        return exc.problems
    return []


def check_all(mappings_dir: Path, schedules_dir: Path) -> list[Problem]:
    from broker.batch.check import batch_problems

    configuration, problems = check_mappings(mappings_dir)
    problems += check_schedules(schedules_dir)
    if configuration is not None:
        problems += batch_problems(configuration, schedules_dir)
    return problems
