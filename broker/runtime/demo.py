"""``broker run --demo``: stand-ins for the systems around Casebridge, so a newcomer can watch a case travel.

A webhook receiver (127.0.0.1:8025 unless ``--demo-receiver-port`` says otherwise) plays the environment team, the
waste contractor and the CRM (it prints what it receives). Every installed adapter that ships a sandbox (entry point
group ``casebridge.sandboxes``: the Confirm and Uniform simulators) gets one started on its own port (``--demo-port
confirm=8026``), with an officer who moves its records on every ten seconds, and its targets' status changes are
polled as often, so they come back to the CRM while you watch. Port 0 picks a free port; the shipped routes are
pointed at whichever ports the stand-ins got.

Run again on the same store, each sandbox numbers its records after the highest reference the store holds for its
adapter's targets, so a new case never takes an old case's number (nor its status changes for ones already seen).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from broker.plugins.contract import Sandbox
    from broker.runtime.process import Broker

_console = Console(stderr=True)

#: Signing secrets the shipped routes.yaml names, given throwaway values for the demo only.
DEMO_SECRETS = ("CASEBRIDGE_CRM_WEBHOOK_SECRET", "CASEBRIDGE_ENVIRONMENT_WEBHOOK_SECRET")
#: The shipped routes' webhook targets, by the variable naming their URL, and the receiver's path for each.
RECEIVER_URLS = {"CASEBRIDGE_CRM_WEBHOOK_URL": "/crm", "CASEBRIDGE_ENVIRONMENT_WEBHOOK_URL": "/environment",
                 "CASEBRIDGE_WASTE_WEBHOOK_URL": "/waste"}
#: How often the sandboxes' officers move records on, and their targets are polled.
OFFICER_SECONDS = 10.0

T = TypeVar("T")


class DemoPortBusy(Exception):
    """A stand-in could not listen on its port; the message says which, and the flag that changes it."""

    def __init__(self, what: str, host: str, port: int, flag: str) -> None:
        self.port = port
        super().__init__(f"Port {port} on {host} is in use, so the demo's {what} cannot start: stop whatever uses it, "
                         f"or give {flag} another port (0 picks a free one).")


@dataclass
class DemoStandIns:
    """The demo's stand-ins, listening; :meth:`start` sets their officers to work once the broker runs."""

    receiver: ThreadingHTTPServer
    #: The sandboxes, by the name of the adapter they stand in for.
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)

    @property
    def receiver_url(self) -> str:
        host, port = self.receiver.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, broker: Broker, *, stop: threading.Event) -> None:
        """Continue each sandbox's numbering after the store's references, then start the officers and polls."""
        _console.print(f"Demo receiver on {self.receiver_url} (the CRM, the environment team and the waste contractor)")
        targets = {name: [target for target, spec in broker.configuration.targets.items()
                          if spec.definition.adapter == name] for name in self.sandboxes}
        for name, sandbox in self.sandboxes.items():
            sandbox.continue_after(_references(broker, targets[name]))
            _console.print(f"Demo {sandbox.title} on {sandbox.url} (its records move on every ten seconds)")
        threading.Thread(target=_officers_and_polls, args=(broker, self.sandboxes, targets, stop),
                         name="demo-officers", daemon=True).start()

    def close(self) -> None:
        for sandbox in self.sandboxes.values():
            sandbox.close()
        _stop(self.receiver)


def start_demo_stand_ins(*, host: str = "127.0.0.1", receiver_port: int = 8025,
                         ports: Mapping[str, int] | None = None) -> DemoStandIns:
    """Start the receiver and every installed sandbox listening (``ports`` by adapter name; 0: any free port) and
    point the shipped routes' URLs at them, unless the environment already names other URLs. Raises DemoPortBusy,
    leaving nothing listening, if a port is taken."""
    from broker.plugins.registry import sandboxes

    for name in DEMO_SECRETS:
        os.environ.setdefault(name, "demo-only-secret")
    ports = dict(ports or {})
    receiver = _listening("webhook receiver (the CRM and other targets)", host, receiver_port, "--demo-receiver-port",
                          lambda: start_demo_receiver(host, receiver_port))
    stand_ins = DemoStandIns(receiver)
    try:
        for name, sandbox_class in sandboxes().items():
            sandbox = sandbox_class()
            port = ports.get(name, sandbox_class.default_port)
            _listening(sandbox_class.title, host, port, f"--demo-port {name}=<port>",
                       partial(sandbox.start, host, port))
            stand_ins.sandboxes[name] = sandbox
    except BaseException:
        stand_ins.close()
        raise
    for variable, path in RECEIVER_URLS.items():
        os.environ.setdefault(variable, f"{stand_ins.receiver_url}{path}")
    for sandbox in stand_ins.sandboxes.values():
        for variable, value in sandbox.environment().items():
            os.environ.setdefault(variable, value)
    return stand_ins


def _listening(what: str, host: str, port: int, flag: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise DemoPortBusy(what, host, port, flag) from exc
        raise


def _stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def start_demo_receiver(host: str = "127.0.0.1", port: int = 8025) -> ThreadingHTTPServer:
    """Serve on a thread; every POST gets 201 and a reference such as DEMO-000001."""
    numbers = itertools.count(1)
    lock = threading.Lock()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                reference = f"DEMO-{next(numbers):06d}"
            event = payload.get("event", {})
            change = event.get("change") or {}
            status = f" (status {change.get('status')}: {change.get('reason') or ''})" if change else ""
            _console.print(
                f"[green]demo target {escape(self.path)}[/green] received {escape(str(event.get('event_type')))} "
                f"for case {escape(str(event.get('case', {}).get('case_id')))}{escape(status)} -> reference {reference}"
            )
            body = json.dumps({"reference": reference}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Receiver)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="demo-receiver",
                     daemon=True).start()
    return server


def _references(broker: Broker, targets: list[str]) -> list[str]:
    """The LOB references the store holds for these targets."""
    from sqlalchemy import select

    from broker.store.tables import ExternalRef

    if not targets:
        return []
    with broker.store.read() as session:
        return list(session.scalars(select(ExternalRef.reference).where(ExternalRef.target.in_(targets))))


def _officers_and_polls(broker: Broker, sandboxes: dict[str, Sandbox], targets: dict[str, list[str]],
                        stop: threading.Event) -> None:
    from broker.scheduling.context import JobContext
    from broker.scheduling.jobs import poll_lob_status_changes

    context = JobContext(broker.store, broker.configuration, broker.intake)
    while not stop.wait(OFFICER_SECONDS):
        for name, sandbox in sandboxes.items():
            for line in sandbox.officer_moves():
                _console.print(f"[yellow]{escape(line)}[/yellow]")
            if not targets[name]:
                continue
            try:
                poll_lob_status_changes(context, {"first_look_back_minutes": 60, "targets": targets[name]})
                broker.wake_relay()
            except Exception as exc:  # a demo keeps going
                _console.print(f"[red]polling {escape(sandbox.title)}'s targets failed: {escape(str(exc))}[/red]")
