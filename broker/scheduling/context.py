"""What a scheduled job is given, and what it is: a callable from a context and its options to a summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.config.loader import Configuration
from broker.intake.transaction import Intake
from broker.settings import Settings
from broker.store.database import Store

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class JobContext:
    """What a scheduled job may use."""

    store: Store
    configuration: Configuration
    intake: Intake
    #: The schedule running the job (jobs that keep per-schedule state, such as batch runs, need it).
    schedule: str | None = None
    #: Told of progress as ``(what, done, total)``; ``broker batch run`` draws a progress bar with it.
    progress: Progress | None = None
    #: The process's settings (the retention job reads its policy there).
    settings: Settings | None = None


Job = Callable[[JobContext, dict[str, Any]], dict[str, Any]]
