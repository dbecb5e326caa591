"""Read a LOB system's CSV file row by row: encoding detection, quoted fields, embedded newlines, UK dates.

Rows are streamed from a local copy of the file, never loaded whole. Each row keeps the line it starts on, so
a bad row can be reported as ``<file> line <n>``.

A byte the file's encoding cannot decode costs its own row and no more. In UTF-8 and in the single-byte code pages
that agree with ASCII (Windows-1252, ISO 8859-x) no such byte can take a line break, a quote or a delimiter with
it, so the file is read with each one set aside (``surrogateescape``) and the row holding it fails alone
(``batch_undecodable_row``), as does a row holding a NUL (``batch_nul_in_row``), which no text column can store.
In any other encoding (UTF-16, the multi-byte Asian code pages) a bad byte may swallow what follows it, row ends
included: such a file is decoded whole before any row is read, and refused (:class:`FileRefused`) if any of it
does not decode. So is a file whose header row does not decode, since its columns cannot be trusted.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from broker.batch.config import ImportFormat
from broker.batch.errors import BatchError, FileRefused, RowError

_UTF8 = {"utf-8", "utf8", "utf_8", "utf-8-sig", "utf_8_sig"}
#: What ``surrogateescape`` makes of a byte it cannot decode (U+DC80 to U+DCFF, for bytes 0x80 to 0xFF).
_SET_ASIDE = re.compile("[\udc80-\udcff]")
#: Characters a cell may not carry on: undecodable bytes, and NUL.
_UNREADABLE = re.compile("[\udc80-\udcff\x00]")
_ASCII = "".join(map(chr, range(128)))
_CHUNK = 1 << 20


def detect_encoding(path: Path, declared: str) -> str:
    """The codec to read ``path`` with. UTF-8 is always read BOM-tolerant; ``auto`` is UTF-8 if the file is UTF-8
    (see :func:`looks_utf8`), else Windows-1252."""
    if declared.lower() in _UTF8:
        return "utf-8-sig"
    if declared != "auto":
        return declared
    return "utf-8-sig" if looks_utf8(path) else "cp1252"


def looks_utf8(path: Path) -> bool:
    """Whether the file is UTF-8: it starts with UTF-8's byte order mark, or it has no byte that is not UTF-8, or
    more of its characters beyond ASCII are valid UTF-8 sequences than not.

    A Windows-1252 file's accented letters almost never form valid UTF-8 (``é`` is the lone byte 0xE9, which UTF-8
    never has alone); a UTF-8 file with a stray byte, or cut short inside its last character, is mostly valid. It
    is read as UTF-8 and only the row holding the bad bytes fails, rather than every é in it turned into Ã©.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    valid = invalid = 0
    with path.open("rb") as raw:
        chunk = raw.read(_CHUNK)
        if chunk.startswith(codecs.BOM_UTF8):
            return True
        while True:
            text = decoder.decode(chunk, final=not chunk)
            if not text.isascii():
                bad = len(_SET_ASIDE.findall(text))
                invalid += bad
                valid += len(text) - len(text.encode("ascii", "ignore")) - bad
            if not chunk:
                break
            chunk = raw.read(_CHUNK)
    return invalid == 0 or valid > invalid


@functools.lru_cache(maxsize=32)
def keeps_rows_apart(encoding: str) -> bool:
    """Whether no undecodable byte in ``encoding`` can swallow a line break, quote or delimiter: true of UTF-8 (a bad
    byte is never taken for the start of an ASCII one) and of single-byte code pages that agree with ASCII."""
    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):
        return True
    try:
        decoded = bytes(range(256)).decode(encoding, "surrogateescape")
    except UnicodeDecodeError:  # surrogateescape cannot set aside bytes below 0x80: not ASCII-compatible
        return False
    return len(decoded) == 256 and decoded[:128] == _ASCII


def _display(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return "utf-8" if name.startswith("utf-8") else name


def _decodes_whole(path: Path, encoding: str) -> None:
    """Raise FileRefused if any of ``path`` is not text in ``encoding``."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as raw:
        try:
            while chunk := raw.read(_CHUNK):
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise FileRefused(
                f"bytes near offset {offset + exc.start} are not valid {_display(encoding)} ({exc.reason}); in "
                f"{_display(encoding)} the rows after a bad byte cannot be told apart, so no row was taken in"
            ) from exc


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
        tolerant = keeps_rows_apart(self.encoding)
        if not tolerant:
            _decodes_whole(path, self.encoding)
        self._file = path.open(encoding=self.encoding, errors="surrogateescape" if tolerant else "strict",
                               newline="")
        self._reader = csv.reader(self._file, delimiter=fmt.delimiter)
        try:
            header = next(self._reader)
        except StopIteration as exc:
            self._file.close()
            raise BatchError("the file is empty (no header row)") from exc
        except csv.Error as exc:
            self._file.close()
            raise BatchError(f"the header row cannot be read: {exc}") from exc
        unreadable = self._unreadable(header, None)
        if unreadable is not None:
            self._file.close()
            raise FileRefused(f"the header row cannot be trusted: {unreadable.message}")
        self.header = [name.strip() for name in header]
        wanted = {name for name in fmt.columns.model_dump().values() if name}
        missing = sorted(wanted - set(self.header))
        if missing:
            self._file.close()
            raise BatchError(f"the header row lacks column(s) {', '.join(missing)} (it has {', '.join(self.header)})")

    def _unreadable(self, cells: list[str], header: list[str] | None) -> RowError | None:
        """Why the first cell holding an undecodable byte or a NUL makes the row unreadable; None if none does.
        The reason names the field and the byte values, never the text around them."""
        for index, cell in enumerate(cells):
            found = _UNREADABLE.findall(cell)
            if not found:
                continue
            where = f"field {index + 1}" + (f" ({header[index]})" if header and index < len(header) else "")
            if "\x00" in found:
                return RowError("batch_nul_in_row", f"{where} holds a NUL byte, which no text column can store")
            values = sorted({f"0x{ord(char) - 0xDC00:02x}" for char in found})
            shown = ", ".join(values[:3]) + (f" and {len(values) - 3} more" if len(values) > 3 else "")
            return RowError("batch_undecodable_row",
                            f"{where} holds byte(s) {shown} that are not valid {_display(self.encoding)} text")
        return None

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
            except csv.Error as exc:
                start, last = last + 1, reader.line_num
                yield Row(start, error=RowError("batch_unreadable_row", str(exc)))
                continue
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            raw = _line(cells, self.fmt.delimiter)
            unreadable = self._unreadable(cells, header) if _UNREADABLE.search(raw) else None
            if unreadable is not None:
                yield Row(start, raw=_UNREADABLE.sub("\ufffd", raw), error=unreadable)
                continue
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
