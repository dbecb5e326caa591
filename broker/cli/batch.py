"""``broker batch``: run a batch schedule now, or see every schedule's last and next run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from broker.cli.common import build_broker, load_settings, open_store

if TYPE_CHECKING:
    from broker.scheduling.schedules import Schedule
    from broker.settings import Settings

batch_app = typer.Typer(
    help="Batch schedules: CSV files to and from line-of-business systems over SFTP.", no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)


def _schedules(settings: Settings) -> list[Schedule]:
    from broker.errors import ConfigError
    from broker.scheduling.jobs import JOB_OPTIONS, JOBS
    from broker.scheduling.schedules import load_schedules

    try:
        return load_schedules(settings.schedules_dir, known_jobs=set(JOBS), option_models=JOB_OPTIONS)
    except ConfigError as exc:
        errors.print("[red]The schedules have problems (run `broker check`):[/red]")
        for problem in exc.problems:
            errors.print(f"  {escape(str(problem))}")
        raise typer.Exit(2) from exc


@batch_app.command("run")
def run_command(
    schedule: Annotated[str, typer.Argument(help="The schedule's name (its `name:` in schedules/).")],
) -> None:
    """Run one schedule now, with a progress bar, then print what it did (rows, files, failures)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from broker.errors import CasebridgeError, JobFailed
    from broker.scheduling.context import JobContext
    from broker.scheduling.scheduler import run_recorded

    settings = load_settings()
    found = {item.name: item for item in _schedules(settings)}
    if schedule not in found:
        errors.print(f"[red]No schedule {escape(repr(schedule))}.[/red] "
                     f"Schedules: {escape(', '.join(sorted(found)) or 'none')}")
        raise typer.Exit(2)
    chosen = found[schedule]
    broker = build_broker(settings, migrate=False)
    try:
        broker.require_schema()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=errors) as progress:
            task = progress.add_task(f"{schedule}: connecting", total=None)

            def report(what: str, done: int, total: int | None) -> None:
                progress.update(task, description=f"{schedule}: {what}", completed=done, total=total)

            context = JobContext(broker.store, broker.configuration, broker.intake,
                                 schedule=schedule, progress=report, settings=settings)
            try:
                summary = run_recorded(context, chosen)
            except JobFailed as exc:
                progress.stop()
                _print_summary(schedule, exc.summary)
                errors.print(f"[red]{schedule} failed:[/red] {exc.message}", soft_wrap=True)
                raise typer.Exit(1) from exc
            except CasebridgeError as exc:
                progress.stop()
                errors.print(f"[red]{escape(schedule)} failed:[/red] {escape(str(exc))}")
                raise typer.Exit(1) from exc
    finally:
        broker.shutdown()
    _print_summary(schedule, summary)


def _print_summary(schedule: str, summary: dict[str, Any]) -> None:
    from rich.table import Table

    if "skipped" in summary:
        console.print(f"[yellow]{escape(schedule)} skipped:[/yellow] {escape(str(summary['skipped']))}")
        return
    if isinstance(summary.get("targets"), dict):  # a status poll: how each target went
        polled = Table("target", "changes", "emitted", "error", title=escape(schedule))
        for target, result in summary["targets"].items():
            polled.add_row(escape(target), str(result.get("changes", "")), str(result.get("emitted", "")),
                           escape(str(result.get("error", ""))))
        console.print(polled)
        return
    table = Table("", "", title=escape(schedule), show_header=False)
    for key in ("rows", "files", "failures"):
        table.add_row(key, str(summary.get(key, 0)))
    for key, value in summary.items():
        if key not in ("rows", "files", "failures") and value not in (None, 0):
            table.add_row(escape(key.replace("_", " ")), escape(str(value)))
    console.print(table)
    if summary.get("failures"):
        console.print("Failed rows are in the failed-message store: `broker failed list --target <target>`.")


@batch_app.command("list")
def list_command() -> None:
    """Every schedule: its job and target, when it last ran and how that went, and when it runs next."""
    from zoneinfo import ZoneInfo

    from rich.table import Table

    from broker.model.events import utc_now
    from broker.store.schedule_runs import last_firings, last_runs

    settings = load_settings()
    schedules = _schedules(settings)
    store = open_store(settings)
    try:
        runs = last_runs(store)
        firings = last_firings(store)
    finally:
        store.dispose()
    table = Table("schedule", "job", "target", "cron", "last run", "outcome", "next run")
    now = utc_now()
    for schedule in schedules:
        zone = ZoneInfo(schedule.timezone)
        run = runs.get(schedule.name)
        last = f"{run.started_at.astimezone(zone):%Y-%m-%d %H:%M}" if run else "never"
        outcome = _outcome(run.outcome, run.summary) if run else ""
        firing = firings.get(schedule.name)
        if firing is not None and (firing.claimed_at - firing.due_at).total_seconds() > 60:
            outcome += (f" (the {firing.due_at.astimezone(zone):%H:%M} firing, missed while no scheduler was up, "
                        f"ran at {firing.claimed_at.astimezone(zone):%H:%M})")
        upcoming = f"{schedule.next_run(now):%Y-%m-%d %H:%M %Z}" if schedule.enabled else "disabled"
        table.add_row(*map(escape, (schedule.name, schedule.job, str(schedule.options.get("target", "")),
                                    schedule.cron, last, outcome, upcoming)))
    console.print(table)


def _outcome(outcome: str, summary: dict[str, Any]) -> str:
    if outcome == "failed":
        return f"failed: {summary.get('error', '')}"[:80]
    if outcome == "skipped":
        return "skipped (another process held it)"
    parts = [f"{summary[key]} {key}" for key in ("rows", "files", "failures") if key in summary]
    return f"{outcome}" + (f" ({', '.join(parts)})" if parts else "")
