"""The house's layout holds: no import cycles, kombu only in the transport, the core free of any adapter, and
``broker --help`` quick because a command imports what it needs when it runs."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

from support.harness import REPO
from support.processes import BROKER_COMMAND

PACKAGES = ("broker", "adapters")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that ``name`` imports, wherever the import is: at the top, in a function, or only for
    type checking (a cycle is a cycle however it is hidden)."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    found.add(full)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_there_are_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_transport_speaks_amqp() -> None:
    outside = {}
    for name, path in modules().items():
        if name.startswith("broker.transport"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for target in targets:
                if target.split(".")[0] in ("kombu", "amqp", "pika") or target == "broker.transport.topology":
                    outside.setdefault(name, set()).add(target)
    assert outside == {}


def test_the_core_imports_no_adapter() -> None:
    """Adapters are plugins: the core finds them (and their sandboxes) through entry points."""
    leaning = {name: sorted(other for other in imported if other.startswith("adapters"))
               for name, imported in graph().items() if name.startswith("broker")}
    assert {name: found for name, found in leaning.items() if found} == {}


def test_only_the_shared_modules_are_loose_at_the_top_of_broker() -> None:
    loose = sorted(path.name for path in (REPO / "broker").glob("*.py") if path.name != "__init__.py")
    assert loose == ["errors.py", "logging.py", "settings.py"]


def test_every_stage_says_what_enters_what_leaves_and_what_it_promises() -> None:
    for package in sorted(path.parent for path in (REPO / "broker").glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert docstring and len(docstring) > 60, f"{package.name}/__init__.py has no paragraph saying what it does"


def test_broker_help_answers_quickly() -> None:
    subprocess.run([BROKER_COMMAND, "--help"], capture_output=True, check=True)  # warm the file cache
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        result = subprocess.run([BROKER_COMMAND, "--help"], capture_output=True, text=True, check=False)
        timings.append(time.perf_counter() - started)
        assert result.returncode == 0 and "Commands" in result.stdout, result.stderr
    assert min(timings) < 0.5, f"broker --help took {min(timings):.2f} s at best ({timings})"


def test_the_commands_import_nothing_heavy_for_their_help() -> None:
    """What ``broker --help`` loads: no database, web or XML library is imported before a command runs."""
    probe = ("import sys; sys.argv = ['broker', '--help']\n"
             "from broker.cli.main import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "heavy = sorted({name.split('.')[0] for name in sys.modules} & "
             "{'sqlalchemy', 'fastapi', 'uvicorn', 'lxml', 'httpx', 'paramiko', 'kombu', 'pydantic', 'argon2', "
             "'alembic', 'pyproj'})\n"
             "print('imported:', ','.join(heavy), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "Commands" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "imported:"
