"""Write deliveries as CSV rows in the target's format: columns, code translation, dates, encoding, line endings.

Cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) are neutralised with a leading apostrophe: the contractor may well open the file in Excel.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any

from broker.batch.config import ExportColumn, ExportFormat

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """Defuse CSV formula injection (OWASP): a cell a spreadsheet would evaluate is prefixed with ``'``."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def field_value(record: dict[str, Any], path: str) -> Any:
    """The value at ``path`` (``case_id``, ``occurred_at``, ``case.location.postcode``...) of an export record."""
    if not path.startswith("case."):
        return record.get(path)
    value: Any = record.get("case")
    for part in path.split(".")[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class RowWriter:
    """Turns export records into encoded CSV lines on a binary stream."""

    def __init__(self, out: IO[bytes], fmt: ExportFormat, columns: list[ExportColumn]) -> None:
        self.fmt = fmt
        self.columns = columns
        self._text = io.TextIOWrapper(out, encoding=fmt.encoding, errors="replace", newline="", write_through=False)
        self._writer = csv.writer(self._text, delimiter=fmt.delimiter, lineterminator=fmt.newline,
                                  quoting=csv.QUOTE_MINIMAL)
        self.rows = 0

    def header(self) -> None:
        self._writer.writerow([neutralise(column.header) for column in self.columns])

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        cells = self._cells
        self._writer.writerows(cells(record) for record in records)

    def _cells(self, record: dict[str, Any]) -> list[str]:
        self.rows += 1
        return [neutralise(self._cell(column, field_value(record, column.field))) for column in self.columns]

    def _cell(self, column: ExportColumn, value: Any) -> str:
        if value is None:
            return ""
        if column.codes:
            text = str(value)
            if text in column.codes:
                return column.codes[text]
            if column.unmapped == "blank":
                return ""
        if isinstance(value, datetime) or (column.date and isinstance(value, str)):
            return self._date(value)
        if isinstance(value, bool):
            return "Y" if value else "N"
        if isinstance(value, list):
            return "; ".join(str(item) for item in value)
        if isinstance(value, dict):
            return "; ".join(f"{key}={item}" for key, item in value.items() if item is not None)
        return str(value)

    def _date(self, value: datetime | str) -> str:
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        except ValueError:
            return value if isinstance(value, str) else str(value)
        if moment.tzinfo is not None:
            moment = moment.astimezone(self.fmt.zone)
        return moment.strftime(self.fmt.date_format)

    def close(self) -> None:
        self._text.flush()
        self._text.detach()
