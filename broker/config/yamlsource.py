"""Read YAML while remembering the line each value came from, so errors can name file and line."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from broker.errors import Problem, clean_message

Path_ = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)

_ENV_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class YamlDocument:
    """A parsed YAML file: its data and the line of every key and item in it."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of the deepest part of ``path`` that exists in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def validate(self, model: type[ModelT], problems: list[Problem], path: Path_ = ()) -> ModelT | None:
        """Validate the document (or the part at ``path``) against ``model``, adding every error to problems."""
        data = self.data
        for part in path:
            data = data[part]
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                loc = path + tuple(error["loc"])
                where = ".".join(str(p) for p in loc) or "(top level)"
                problems.append(Problem(self.file, self.line_of(loc), f"{where}: {clean_message(error['msg'])}"))
            return None


def load_yaml(path: Path, problems: list[Problem]) -> YamlDocument | None:
    """Parse one YAML file; a syntax error becomes a Problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(Problem(str(path), None, f"cannot read: {exc.strerror}"))
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problems.append(Problem(str(path), line, f"YAML syntax: {exc.problem}"))
        return None
    document = YamlDocument(str(path), None)
    document.data = _to_python(node, (), document.lines) if node is not None else {}
    return document


def _to_python(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct_scalar(key_node)
            child = (*path, key)
            result[key] = _to_python(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, index), lines) for index, item in enumerate(node.value)]
    return _construct_scalar(node)


def _construct_scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def expand_environment(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in strings, recursively; a missing name raises KeyError."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise KeyError(name)

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {key: expand_environment(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_environment(item, env) for item in value]
    return value
