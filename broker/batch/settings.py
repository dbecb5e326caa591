"""A batch target's ``batch:`` section, validated."""

from __future__ import annotations

from pydantic import ValidationError

from broker.batch.config import BatchMapping
from broker.batch.errors import BatchError
from broker.config.loader import Target
from broker.config.yamlsource import expand_environment
from broker.errors import clean_message


def batch_mapping(target: Target) -> BatchMapping:
    """The target's ``batch:`` section with ``${NAME}`` expanded from the environment, validated."""
    if target.batch is None:
        raise BatchError(f"target {target.name!r} has no batch: section in its mapping file")
    try:
        return BatchMapping.model_validate(expand_environment(target.batch))
    except KeyError as exc:
        raise BatchError(f"target {target.name!r}: environment variable {exc.args[0]} is not set and has no "
                         "default") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("batch", *first["loc"]))
        raise BatchError(f"target {target.name!r}: {where}: {clean_message(first['msg'])} "
                         "(run `broker check`)") from exc
