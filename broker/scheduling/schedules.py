"""Schedules: ``schedules/*.yaml`` files that run a named job on a cron expression in a time zone."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from broker.config.yamlsource import load_yaml
from broker.errors import ConfigError, Problem


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a folder of the database, e.g. "Europe"
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


#: An IANA time zone name (``Europe/London``), refused when the machine's zone database does not know it.
TimeZoneName = Annotated[str, AfterValidator(_known_zone)]


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    cron: str = Field(description="Five-field cron expression, e.g. '*/30 * * * *'.")
    timezone: TimeZoneName = "Europe/London"
    job: str = Field(description="Job name, e.g. deliveries.requeue_stale.")
    enabled: bool = True
    misfire_grace_minutes: float = Field(
        60.0, ge=0, description="A firing missed while no scheduler was up is run once when one starts, if it was "
        "due no longer ago than this (several missed firings make one run); 0: missed firings are skipped.",
    )
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid five-field cron expression")
        return value

    def next_run(self, after: datetime) -> datetime:
        local = after.astimezone(ZoneInfo(self.timezone))
        result: datetime = croniter(self.cron, local).get_next(datetime)
        return result

    def previous_run(self, before: datetime) -> datetime:
        """The last cron time at or before ``before``."""
        local = before.astimezone(ZoneInfo(self.timezone))
        result: datetime = croniter(self.cron, local + timedelta(seconds=1)).get_prev(datetime)
        return result


def load_schedules(directory: Path, known_jobs: set[str] | None = None,
                   option_models: Mapping[str, type[BaseModel]] | None = None) -> list[Schedule]:
    """Every schedule in ``directory``; raise ConfigError listing every problem, with file and line.

    Jobs named in ``option_models`` have their ``options`` validated by that model too.
    """
    problems: list[Problem] = []
    schedules: list[Schedule] = []
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        document = load_yaml(path, problems)
        if document is None:
            continue
        job = document.data.get("job") if isinstance(document.data, dict) else None
        job_known = known_jobs is None or not isinstance(job, str) or job in known_jobs
        if not job_known:
            problems.append(Problem(document.file, document.line_of(("job",)),
                                    f"unknown job {job!r} (known: {', '.join(sorted(known_jobs or ()))})"))
        schedule = document.validate(Schedule, problems)
        if schedule is None or not job_known:
            continue
        options_model = (option_models or {}).get(schedule.job)
        if options_model is not None:
            if "options" not in document.data:
                problems.append(Problem(document.file, document.line_of(("job",)),
                                        f"job {schedule.job} needs options"))
                continue
            if document.validate(options_model, problems, ("options",)) is None:
                continue
        if any(existing.name == schedule.name for existing in schedules):
            problems.append(Problem(document.file, document.line_of(("name",)),
                                    f"schedule name {schedule.name!r} is used twice"))
            continue
        schedules.append(schedule)
    if problems:
        raise ConfigError(problems)
    return schedules
