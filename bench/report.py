"""Writing a benchmark's results into its section of docs/benchmarks.md, leaving the rest of the page alone."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, text: str, start: str, end: str) -> None:
    """Replace what stands between the ``start`` and ``end`` markers with ``text`` (which carries both markers),
    or append ``text`` when the page has no such section yet."""
    current = path.read_text() if path.exists() else ""
    if start in current and end in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1]
        path.write_text(before + text + after)
    else:
        path.write_text(current + ("\n" if current else "") + text + "\n")
