"""Read a LOB system's CSV file row by row: encoding detection, quoted fields, embedded newlines, UK dates.

Rows are streamed from a local copy of the file, never loaded whole. Each row keeps the line it starts on, so
a bad row can be reported as ``<file> line <n>``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from broker.batch.config import ImportFormat
from broker.batch.errors import BatchError, RowError

_UTF8 = {"utf-8", "utf8", "utf_8", "utf-8-sig", "utf_8_sig"}


def detect_encoding(path: Path, declared: str) -> str:
    """The codec to read ``path`` with. UTF-8 is always read BOM-tolerant; ``auto`` falls back to Windows-1252."""
    if declared.lower() in _UTF8:
        return "utf-8-sig"
    if declared != "auto":
        return declared
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as raw:
        try:
            while chunk := raw.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8-sig"


@dataclass
class Row:
    line: int
    values: dict[str, str] = field(default_factory=dict)
    raw: str = ""
    error: RowError | None = None


class CsvRows:
    """The header and the rows of one file. Iterate for rows; ``header`` is read on opening."""

    def __init__(self, path: Path, fmt: ImportFormat) -> None:
        self.fmt = fmt
        self.encoding = detect_encoding(path, fmt.encoding)
        self._file = path.open(encoding=self.encoding, errors="strict", newline="")
        self._reader = csv.reader(self._file, delimiter=fmt.delimiter)
        try:
            header = next(self._reader)
        except StopIteration as exc:
            self._file.close()
            raise BatchError("the file is empty (no header row)") from exc
        except (UnicodeDecodeError, csv.Error) as exc:
            self._file.close()
            raise BatchError(f"the header row cannot be read: {exc}") from exc
        self.header = [name.strip() for name in header]
        wanted = {name for name in fmt.columns.model_dump().values() if name}
        missing = sorted(wanted - set(self.header))
        if missing:
            self._file.close()
            raise BatchError(f"the header row lacks column(s) {', '.join(missing)} (it has {', '.join(self.header)})")

    def __enter__(self) -> CsvRows:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[Row]:
        reader, header = self._reader, self.header
        last = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                start, last = last + 1, reader.line_num
                yield Row(start, error=RowError("batch_unreadable_row", str(exc)))
                if isinstance(exc, UnicodeDecodeError):
                    return  # the decoder cannot resynchronise; the rest of the file is reported with this row
                continue
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            raw = _line(cells, self.fmt.delimiter)
            if len(cells) != len(header):
                yield Row(start, raw=raw, error=RowError(
                    "batch_wrong_column_count", f"{len(cells)} fields where the header has {len(header)}"))
                continue
            yield Row(start, dict(zip(header, (cell.strip() for cell in cells), strict=True)), raw)


def _line(cells: list[str], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow(cells)
    return out.getvalue()


def parse_date(text: str, fmt: ImportFormat) -> datetime:
    """A file's local date and time (UK format by default) as an aware datetime; a date alone means midnight."""
    moment = _parse_local(text, fmt.date_format, fmt.zone)
    if moment is None:
        raise RowError("batch_bad_date", f"{text!r} is not a date in the format {fmt.date_format}")
    return moment


@functools.lru_cache(maxsize=4096)
def _parse_local(text: str, date_format: str, zone: tzinfo) -> datetime | None:
    # Cached: a file's rows share their dates and times far more often than not, and strptime is slow.
    for pattern in (date_format, date_format.split(" ")[0]):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=zone)
        except ValueError:
            continue
    return None
