"""``broker check`` for batch targets and schedules: each problem with its file and line."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from broker.batch.config import BatchMapping
from broker.batch.jobs import OPTION_MODELS
from broker.config.loader import Configuration
from broker.config.yamlsource import expand_environment, load_yaml
from broker.errors import Problem, clean_message


def batch_problems(configuration: Configuration, schedules_dir: Path) -> list[Problem]:
    problems: list[Problem] = []
    mappings: dict[str, BatchMapping] = {}
    for name, target in configuration.targets.items():
        document = target.mapping_document
        if target.batch is None or document is None:
            continue
        try:
            mappings[name] = BatchMapping.model_validate(expand_environment(target.batch))
        except KeyError as exc:
            problems.append(Problem(document.file, document.line_of(("batch",)),
                                    f"batch: environment variable {exc.args[0]} is not set and has no default"))
        except ValidationError as exc:
            for error in exc.errors():
                loc = ("batch", *error["loc"])
                problems.append(Problem(document.file, document.line_of(loc),
                                        f"{'.'.join(str(part) for part in loc)}: {clean_message(error['msg'])}"))
    for path in sorted(schedules_dir.glob("*.yaml")) if schedules_dir.is_dir() else []:
        document = load_yaml(path, [])
        data = document.data if document is not None else None
        if document is None or not isinstance(data, dict) or data.get("job") not in OPTION_MODELS:
            continue
        options = data.get("options")
        wanted = options.get("target") if isinstance(options, dict) else None
        if not isinstance(wanted, str):
            continue  # reported by the options model
        name = wanted
        line = document.line_of(("options", "target"))
        if name not in configuration.targets:
            problems.append(Problem(document.file, line, f"options.target: unknown target {name!r}"))
            continue
        definition = configuration.targets[name]
        if definition.batch is None:
            problems.append(Problem(document.file, line, f"options.target: target {name!r} has no batch: section "
                                                         "in its mapping file (CSV format and SFTP server)"))
            continue
        mapping = mappings.get(name)
        direction = "export" if data["job"] == "batch.export" else "import"
        if mapping is not None and getattr(mapping, "export" if direction == "export" else "import_") is None:
            problems.append(Problem(document.file, line,
                                    f"options.target: target {name!r} has no batch.{direction} format"))
        if direction == "import" and definition.definition.system is None:
            problems.append(Problem(document.file, line, f"options.target: target {name!r} needs `system:` in "
                                                         "routes.yaml, so events its files raise are never sent "
                                                         "back to it"))
    return problems
