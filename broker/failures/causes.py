"""Failures that share a cause read as one line: an error text with its particulars blanked out."""

from __future__ import annotations

import re

_PATTERNS = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"\d+(?:[./:-]\d+)*"), "#"),
    (re.compile(r"\s+"), " "),
)


def normalise_error(text: str) -> str:
    """``Logged Date 04/06/2018 15:33:28 ...`` and ``Logged Date 05/06/2018 09:01:02 ...`` give the same cause."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text.strip()[:200]
