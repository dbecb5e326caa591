"""The shapes of a batch target's ``batch:`` section (in its mapping file) and of batch schedules' options.

A mapping file such as ``mappings/waste-contractor.yaml`` says how the target's files look and where its SFTP
server is; a schedule says when to run, which way, and which files. Secrets never appear in either: the server's
password or the path of the private key are read from environment variables the file names.
"""

from __future__ import annotations

import codecs
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from broker.batch.errors import UnsafeRemoteName
from broker.batch.names import check_directory, check_name
from broker.model.case import CaseStatus, Channel, ServiceCode
from broker.scheduling.schedules import TimeZoneName

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SftpServer(_Model):
    """Where the target's SFTP server is and how to log in. The host key must already be in ``known_hosts``."""

    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    username: str = Field(min_length=1)
    known_hosts: Path = Field(description="OpenSSH known_hosts file holding the server's host key; "
                                          "an unknown or changed key is refused, never accepted.")
    password_env: EnvName | None = Field(None, description="Environment variable holding the password.")
    key_path_env: EnvName | None = Field(None, description="Environment variable holding the private key's path.")
    key_passphrase_env: EnvName | None = None
    timeout_seconds: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _some_credential(self) -> SftpServer:
        if not (self.password_env or self.key_path_env):
            raise ValueError("give password_env or key_path_env (the environment variable, not the secret)")
        return self


class LineEnding(StrEnum):
    crlf = "crlf"
    lf = "lf"


class CsvFormat(_Model):
    encoding: str = Field("utf-8", description="utf-8, utf-8-sig (with BOM), windows-1252, ...; imports also "
                                               "take 'auto': UTF-8 (BOM or not) if the file is UTF-8 (a BOM, or "
                                               "mostly valid UTF-8), else Windows-1252.")
    delimiter: str = Field(",", min_length=1, max_length=1)
    line_ending: LineEnding = LineEnding.crlf
    date_format: str = Field("%d/%m/%Y %H:%M", description="strftime/strptime format of dates (UK by default).")
    timezone: TimeZoneName = Field("Europe/London", description="Dates in files are local times in this zone.")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError as exc:
                raise ValueError(f"unknown encoding {value!r}") from exc
        return value

    @field_validator("date_format")
    @classmethod
    def _usable_date_format(cls, value: str) -> str:
        sample = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        try:
            text = sample.strftime(value)
            datetime.strptime(text, value)
        except ValueError as exc:
            raise ValueError(f"date format {value!r} cannot be written and read back: {exc}") from exc
        return value

    @property
    def newline(self) -> str:
        return "\r\n" if self.line_ending is LineEnding.crlf else "\n"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


#: What an export column can hold: a field of the delivery's case, or of its event.
FIELD_PATTERN = re.compile(
    r"^(case_id|source|service_code|status|event_id|event_type|occurred_at|correlation_id|"
    r"case\.[A-Za-z0-9_.-]+)$"
)


class ExportColumn(_Model):
    header: str = Field(min_length=1)
    field: str = Field(description="case_id, source, service_code, status, event_id, event_type, occurred_at, "
                                   "or a path into the case such as case.location.postcode or "
                                   "case.attributes.bin_type.")
    codes: dict[str, str] = Field(default_factory=dict, description="Canonical value -> the LOB system's code.")
    unmapped: Literal["pass_through", "blank"] = Field(
        "pass_through", description="A value missing from codes (when codes is not empty): kept, or left blank.")
    date: bool = Field(False, description="Write the value (an ISO date and time) in the target's date format.")

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if not FIELD_PATTERN.match(value):
            raise ValueError(f"unknown field {value!r}; use case_id, service_code, status, event_id, event_type, "
                             "occurred_at, source or case.<path>")
        return value


class ExportFormat(CsvFormat):
    columns: list[ExportColumn] = Field(min_length=1)


class ImportColumns(_Model):
    """Which header of the LOB system's file holds each value. Only the ones the file has need naming."""

    case_id: str | None = Field(None, description="Our reference for the case (as we exported it).")
    lob_ref: str | None = Field(None, description="The LOB system's reference for the case.")
    status: str | None = None
    occurred_at: str | None = Field(None, description="When the change happened (else the file's time).")
    notes: str | None = None
    service: str | None = Field(None, description="The LOB system's job type, for cases raised there.")
    description: str | None = None
    address: str | None = None
    postcode: str | None = None


class ImportFormat(CsvFormat):
    encoding: str = "auto"
    columns: ImportColumns
    statuses: dict[str, CaseStatus] = Field(default_factory=dict, description="LOB status -> canonical status.")
    services: dict[str, ServiceCode] = Field(
        default_factory=dict, description="LOB job type -> canonical service code, for cases raised in the LOB.")
    new_case_channel: Channel = Field(Channel.phone, description="Channel recorded for cases raised in the LOB.")

    @model_validator(mode="after")
    def _identifies_cases(self) -> ImportFormat:
        if not (self.columns.case_id or self.columns.lob_ref):
            raise ValueError("columns must name case_id or lob_ref: a row must say which case it is about")
        return self


class BatchMapping(_Model):
    """A target's ``batch:`` section."""

    sftp: SftpServer
    export: ExportFormat | None = None
    import_: ImportFormat | None = Field(None, alias="import")


def _remote_dir(value: str) -> str:
    try:
        return check_directory(value)
    except UnsafeRemoteName as exc:
        raise ValueError(str(exc)) from exc


class _ScheduleOptions(_Model):
    target: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    remote_dir: str = Field(description="Remote directory, e.g. /outbound.")
    lock_minutes: float = Field(60.0, gt=0, description="A run's lease on its schedule; a crashed run's lease "
                                                       "runs out after this long and the next run takes over.")

    @field_validator("remote_dir")
    @classmethod
    def _safe_dir(cls, value: str) -> str:
        return _remote_dir(value)


class ExportOptions(_ScheduleOptions):
    """Options of a ``batch.export`` schedule."""

    direction: Literal["export"] = "export"
    file_name: str = Field("casebridge_{target}_{now:%Y%m%d_%H%M%S}.csv",
                           description="Name of each file: {target} and {now:<strftime>} (UK local time).")
    columns: list[ExportColumn] | None = Field(None, description="Overrides the target mapping's columns.")
    max_rows: int = Field(1_000_000, ge=1, description="At most this many deliveries per file.")

    @field_validator("file_name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        try:
            check_name(render_file_name(value, "target", datetime(2026, 1, 2, tzinfo=UTC)))
        except UnsafeRemoteName as exc:
            raise ValueError(str(exc)) from exc
        except (KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"file_name {value!r}: only {{target}} and {{now:<strftime>}} may be used") from exc
        return value


class ImportOptions(_ScheduleOptions):
    """Options of a ``batch.import`` schedule."""

    direction: Literal["import"] = "import"
    pattern: str = Field("*.csv", min_length=1, description="Which files to take, e.g. CSVEXP_*.CSV (case matters).")
    archive_dir: str | None = Field(None, description="Where processed files go (default <remote_dir>/archive).")
    chunk_rows: int = Field(2_000, ge=1, le=10_000, description="Rows taken in per transaction.")
    settle_seconds: float = Field(5.0, ge=0, le=600, description=(
        "A file is taken only if its size and time are the same in two listings this far apart (0: one listing)."))

    @field_validator("archive_dir")
    @classmethod
    def _safe_archive(cls, value: str | None) -> str | None:
        return None if value is None else _remote_dir(value)

    @property
    def archive(self) -> str:
        return self.archive_dir or f"{self.remote_dir.rstrip('/')}/archive"


def render_file_name(template: str, target: str, now: datetime, zone: str = "Europe/London") -> str:
    return template.format(target=target, now=now.astimezone(ZoneInfo(zone)))


def parse_batch_mapping(data: dict[str, Any]) -> BatchMapping:
    return BatchMapping.model_validate(data)
