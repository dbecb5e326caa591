"""The ``broker`` command: run the broker or its parts, check configuration, inspect cases, manage keys."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from broker.cli.adapter import adapter_app
from broker.cli.batch import batch_app
from broker.cli.cases import case_app
from broker.cli.common import build_broker, console, load_settings, open_store, require_mappings
from broker.cli.failed import failed_app
from broker.cli.keys import keys_app
from broker.cli.users import users_app

if TYPE_CHECKING:
    from broker.runtime.process import Broker
    from broker.settings import Settings

app = typer.Typer(
    name="broker",
    help="Casebridge: carries council cases between CRM systems and line-of-business systems.\n\n"
    "Settings come from CASEBRIDGE_* environment variables (or a TOML file named by CASEBRIDGE_CONFIG); "
    "with none set, everything runs in this process on SQLite (casebridge.db) and an in-process transport.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(case_app, name="case")
app.add_typer(keys_app, name="keys")
app.add_typer(failed_app, name="failed")
app.add_typer(batch_app, name="batch")
app.add_typer(users_app, name="users")
app.add_typer(adapter_app, name="adapter")
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
schema_app = typer.Typer(help="The canonical model's published JSON Schema.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")


def add_plugin_commands() -> None:
    """Command groups that adapter packages contribute (entry point group ``casebridge.commands``)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="casebridge.commands"):
        app.add_typer(entry.load(), name=entry.name)


def stop_on_signals(stop: threading.Event) -> threading.Event:
    """SIGTERM and SIGINT set ``stop`` instead of ending the process, so shutdown returns in-flight work."""

    def handle(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


@app.command()
def run(
    demo: Annotated[bool, typer.Option(help="Also start stand-ins for the CRM and other targets (127.0.0.1:8025) "
                                            "and for every LOB system an installed adapter ships a sandbox for "
                                            "(Confirm on 8026, Uniform on 8027), and print an API key.")] = False,
    host: Annotated[str | None, typer.Option(help="Listen address (default CASEBRIDGE_HTTP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default CASEBRIDGE_HTTP_PORT).")] = None,
    demo_receiver_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="With --demo: the webhook receiver's port (default CASEBRIDGE_DEMO_RECEIVER_PORT, "
                               "8025; 0 picks a free one).")] = None,
    demo_port: Annotated[list[str] | None, typer.Option(
        metavar="ADAPTER=PORT", help="With --demo: a sandbox's port, e.g. confirm=8026 (repeat for each; default "
                                     "CASEBRIDGE_DEMO_PORTS, or the sandbox's own; 0 picks a free one).")] = None,
) -> None:
    """Start everything in one process: API, workers, outbox relay and scheduler."""
    settings = listening_on(load_settings(), host, port)
    stand_ins = None
    if demo:
        from broker.runtime.demo import DemoPortBusy, start_demo_stand_ins

        try:  # before the broker reads routes.yaml: the shipped routes are pointed at the stand-ins' ports
            stand_ins = start_demo_stand_ins(
                receiver_port=settings.demo_receiver_port if demo_receiver_port is None else demo_receiver_port,
                ports={**settings.demo_ports, **_ports(demo_port or [])},
            )
        except DemoPortBusy as busy:
            console.print(f"[red]{busy}[/red]", soft_wrap=True)
            raise typer.Exit(2) from None
    try:
        broker = build_broker(settings, migrate=True)
    except BaseException:
        if stand_ins is not None:
            stand_ins.close()
        raise
    if stand_ins is not None:
        from broker.store.keys import create_key

        stand_ins.start(broker, stop=broker.stop_event)
        console.print(f"[bold]Demo API key for system 'crm':[/bold] {create_key(broker.store, 'crm')}")
        from broker.console.accounts import demo_operator

        console.print(f"[bold]Support console:[/bold] http://{host or settings.http_host}:{port or settings.http_port}"
                      f"/console — sign in as [bold]demo[/bold] with password {demo_operator(broker.store)}",
                      soft_wrap=True)
    broker.start_relay()
    broker.start_workers()
    broker.start_scheduler()
    _serve(broker, settings.http_host, settings.http_port)


def _ports(given: list[str]) -> dict[str, int]:
    """``confirm=8026`` options as a mapping; a malformed one is a usage error naming it."""
    ports = {}
    for option in given:
        name, _, number = option.partition("=")
        if not name or not number.isdigit() or int(number) > 65535:
            raise typer.BadParameter(f"{option!r}: write it as ADAPTER=PORT, e.g. confirm=8026",
                                     param_hint="--demo-port")
        ports[name.strip()] = int(number)
    return ports


def listening_on(settings: Settings, host: str | None, port: int | None) -> Settings:
    """The settings with the listen address given on the command line (status URLs are derived from it)."""
    changes = {name: value for name, value in (("http_host", host), ("http_port", port)) if value is not None}
    return settings.model_copy(update=changes) if changes else settings


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Listen address (default CASEBRIDGE_HTTP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default CASEBRIDGE_HTTP_PORT).")] = None,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="API processes sharing the port, to use more CPU cores (needs PostgreSQL and RabbitMQ; "
                            "each process has its own relay).")] = 1,
) -> None:
    """Start the HTTP API (and the outbox relay that publishes what it accepts)."""
    settings = listening_on(load_settings(), host, port)
    if workers > 1:
        from broker.cli.api_processes import serve

        serve(settings, workers)
        return
    broker = build_broker(settings, migrate=False)
    broker.require_schema()
    broker.start_relay()
    _serve(broker, settings.http_host, settings.http_port)


@app.command()
def worker() -> None:
    """Start the AMQP intake consumer and one delivery consumer per real-time target."""
    _run_until_stopped(_start_worker)


@app.command()
def scheduler() -> None:
    """Start the scheduler, which runs the jobs in schedules/ at their cron times."""
    _run_until_stopped(_start_scheduler)


def _start_worker(broker: Broker) -> None:
    broker.start_relay()
    broker.start_workers()
    broker.serve_operations()


def _start_scheduler(broker: Broker) -> None:
    broker.start_relay()
    broker.start_scheduler()
    broker.serve_operations()


def _run_until_stopped(start: Callable[[Broker], object]) -> None:
    """Start a headless part of the broker and keep it running until SIGTERM or SIGINT.

    The signals are handled before anything else is done, so an orchestrator's stop during start-up is a clean
    exit rather than a kill.
    """
    stop = stop_on_signals(threading.Event())
    from broker.runtime.gc_tuning import settle_after_start

    broker = build_broker(load_settings(), migrate=False, stop=stop)
    broker.require_schema()
    if not stop.is_set():
        start(broker)
        settle_after_start()
    stop.wait()
    broker.shutdown()


def _serve(broker: Broker, host: str, port: int) -> None:
    import uvicorn

    from broker.runtime.gc_tuning import settle_after_start

    console.print(f"Casebridge listening on http://{host}:{port} (API docs at /docs)")
    server = uvicorn.Server(uvicorn.Config(broker.api_app(), host=host, port=port, log_config=None,
                                           access_log=False))
    # uvicorn handles SIGTERM/SIGINT while it serves, then re-raises the signal to the handler that was there
    # before it; with ours in place that re-raise only marks the broker as stopping, and shutdown runs below.
    stop_on_signals(broker.stop_event)
    settle_after_start()
    try:
        server.run()
    finally:
        broker.shutdown()


@app.command()
def check(
    mappings: Annotated[Path | None, typer.Option(help="Mappings folder (default CASEBRIDGE_MAPPINGS_DIR).")] = None,
    schedules: Annotated[Path | None, typer.Option(help="Schedules folder (default CASEBRIDGE_SCHEDULES_DIR).")] = None,
) -> None:
    """Validate settings, mappings/ and schedules/; print every problem with file and line."""
    from broker.config.check import check_all, check_settings
    from broker.errors import Severity

    settings, found = check_settings()
    if settings is not None:
        found += check_all(mappings or settings.mappings_dir, schedules or settings.schedules_dir)
    problems = [problem for problem in found if problem.severity is Severity.error]
    warnings = [problem for problem in found if problem.severity is Severity.warning]
    for problem in problems:
        typer.secho(str(problem), fg=typer.colors.RED, err=True)
    for warning in warnings:
        typer.secho(str(warning), fg=typer.colors.YELLOW, err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) found.", err=True)
    if warnings:
        typer.echo(f"{len(warnings)} warning(s): the configuration works, but see above.", err=True)
    if problems:
        raise typer.Exit(1)
    if settings is not None:
        console.print(f"Retention: {settings.retention_summary()}.", markup=False)
    console.print("[green]Configuration, mappings and schedules are valid.[/green]")


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the schema file.")] = Path("docs/schema"),
) -> None:
    """Write the canonical event model's JSON Schema (event-v<version>.schema.json)."""
    from broker.model.schema import export_schema

    console.print(f"Wrote {export_schema(directory)}")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Each target's circuit (closed, open, half_open), its deliveries by state, failures and queue depth."""
    from rich.table import Table

    from broker.config.loader import load_configuration
    from broker.operations.status import broker_status

    settings = load_settings()
    require_mappings(settings)
    report = broker_status(settings, load_configuration(settings.mappings_dir), open_store(settings))
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    table = Table("target", "circuit", "deliveries", "open failures", "queued", "consumers")
    for target in report.targets:
        circuit = target.circuit + (f" until {target.paused_until:%H:%M:%S}" if target.paused_until else "")
        states = ", ".join(f"{state} {count}" for state, count in sorted(target.deliveries.items())) or "none"
        table.add_row(target.target, circuit, states, str(target.open_failures),
                      "" if target.queued_messages is None else str(target.queued_messages),
                      "" if target.consumers is None else str(target.consumers))
    Console().print(table)
    console.print(f"Outbox backlog: {report.outbox_backlog}"
                  + ("" if report.intake_queue is None else f"; intake queue: {report.intake_queue}"))
    console.print(f"Store: {_megabytes(report.store_bytes)}"
                  + (f" of {_megabytes(report.store_limit_bytes)}" if report.store_limit_bytes else ""))
    if report.store_warning:
        console.print(f"[yellow]Warning: {report.store_warning}[/yellow]")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write mappings/ and schedules/ (default: here).")
                         ] = Path(),
    force: Annotated[bool, typer.Option(help="Write over files that are already there.")] = False,
) -> None:
    """Write a starter configuration: mappings/ (services and routes, commented) and schedules/, valid as they are
    (`broker check` passes), for an installed broker with no clone of the repository beside it."""
    from importlib.resources import files

    starter = files("broker.config") / "starter"
    written, kept = [], []
    for folder in ("mappings", "schedules"):
        (directory / folder).mkdir(parents=True, exist_ok=True)
        for source in sorted(starter.joinpath(folder).iterdir(), key=lambda item: item.name):
            if not source.name.endswith(".yaml"):
                continue
            destination = directory / folder / source.name
            if destination.exists() and not force:
                kept.append(destination)
                continue
            destination.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
            written.append(destination)
    for path in written:
        console.print(f"wrote {path}", markup=False)
    for path in kept:
        console.print(f"kept {path} (already there; --force writes over it)", markup=False)
    console.print("Next: edit mappings/routes.yaml for your systems, `broker check`, then `broker run`.")


def _megabytes(size: int | None) -> str:
    return f"{(size or 0) / 1_048_576:,.1f} MB"


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the store's tables to the newest schema."""
    from broker.store.database import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    console.print("Store schema is up to date.")


def main() -> None:
    """The ``broker`` command. A store or message broker that cannot be reached is said in one line (exit 1),
    never as a traceback: the operator needs to know what to fix, not where in the code it was noticed."""
    from broker.errors import SchemaOutOfDate

    add_plugin_commands()
    try:
        app(prog_name="broker")
    except SchemaOutOfDate as exc:
        typer.echo(f"broker: {exc}", err=True)
        raise SystemExit(2) from None
    except Exception as exc:
        what = _unreachable(exc)
        if what is None:
            raise
        from broker.logging import describe_error

        typer.echo(f"broker: cannot reach {what}: {describe_error(exc)}", err=True)
        raise SystemExit(1) from None


def _unreachable(exc: BaseException) -> str | None:
    """What an exception says cannot be reached (the store, RabbitMQ), or None if it is something else."""
    from broker.store.database import is_database_outage
    from broker.transport.connection import is_broker_unreachable

    if is_database_outage(exc):
        return "the store (CASEBRIDGE_DATABASE_URL)"
    if is_broker_unreachable(exc):
        return "the message broker (CASEBRIDGE_AMQP_URL)"
    return None


if __name__ == "__main__":
    main()
