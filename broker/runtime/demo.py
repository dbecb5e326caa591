"""``broker run --demo``: stand-ins for the systems around Casebridge, so a newcomer can watch a case travel.

A webhook receiver (127.0.0.1:8025 unless ``--demo-receiver-port`` says otherwise) plays the environment team, the
waste contractor and the CRM (it prints what it receives); a Confirm simulator (8026, ``--demo-confirm-port``) plays
the highways system, with an officer who moves each new enquiry on after a few seconds; a Uniform simulator (8027,
``--demo-uniform-port``) plays environmental health, with an officer who investigates and then closes each new
service request; and both systems' status changes are polled every ten seconds, so they come back to the CRM while
you watch. Port 0 picks a free port; the shipped routes are pointed at whichever ports the stand-ins got.

Run again on the same store, the simulators number their records after the highest reference the store holds for
their targets, so a new case never takes an old case's enquiry number (and its status changes are never taken for
ones already seen).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

if TYPE_CHECKING:
    from adapters.confirm.simulator import ConfirmSimulator
    from adapters.uniform.simulator import UniformSimulator
    from broker.runtime.process import Broker

_console = Console(stderr=True)

#: Signing secrets the shipped routes.yaml names, given throwaway values for the demo only.
DEMO_SECRETS = ("CASEBRIDGE_CRM_WEBHOOK_SECRET", "CASEBRIDGE_ENVIRONMENT_WEBHOOK_SECRET")
#: The shipped routes' webhook targets, by the variable naming their URL, and the receiver's path for each.
RECEIVER_URLS = {"CASEBRIDGE_CRM_WEBHOOK_URL": "/crm", "CASEBRIDGE_ENVIRONMENT_WEBHOOK_URL": "/environment",
                 "CASEBRIDGE_WASTE_WEBHOOK_URL": "/waste"}
#: A Confirm enquiry number, and the running number of a Uniform reference value such as 26/00034/SR.
_CONFIRM_NUMBER = re.compile(r"\d+")
_UNIFORM_NUMBER = re.compile(r"\d+/(\d+)/[A-Z]+")

ServerT = TypeVar("ServerT")


class DemoPortBusy(Exception):
    """A stand-in could not listen on its port; the message says which, and the flag that changes it."""

    def __init__(self, what: str, host: str, port: int, flag: str) -> None:
        self.port = port
        super().__init__(f"Port {port} on {host} is in use, so the demo's {what} cannot start: stop whatever uses it, "
                         f"or give {flag} another port (0 picks a free one).")


@dataclass
class DemoStandIns:
    """The demo's three stand-ins, listening; :meth:`start` sets their officers to work once the broker runs."""

    receiver: ThreadingHTTPServer
    confirm: ConfirmSimulator
    uniform: UniformSimulator

    @property
    def receiver_url(self) -> str:
        host, port = self.receiver.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, broker: Broker, *, stop: threading.Event) -> None:
        """Continue the simulators' numbering after the store's references, then start the officers and polls."""
        continue_numbering(broker, self.confirm, self.uniform)
        _console.print(f"Demo receiver on {self.receiver_url} (the CRM, the environment team and the waste contractor)")
        start_demo_confirm(broker, self.confirm, stop=stop)
        start_demo_uniform(broker, self.uniform, stop=stop)

    def close(self) -> None:
        for server in (self.confirm, self.uniform):
            server.close()
        _stop(self.receiver)


def _stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def start_demo_stand_ins(*, host: str = "127.0.0.1", receiver_port: int = 8025, confirm_port: int = 8026,
                         uniform_port: int = 8027) -> DemoStandIns:
    """Start the three stand-ins listening (0: any free port) and point the shipped routes' URLs at them, unless
    the environment already names other URLs. Raises DemoPortBusy, leaving nothing listening, if a port is taken."""
    from adapters.confirm.simulator import ConfirmSimulator
    from adapters.uniform.simulator import UniformSimulator

    for name in DEMO_SECRETS:
        os.environ.setdefault(name, "demo-only-secret")
    os.environ.setdefault("CASEBRIDGE_CONFIRM_PASSWORD", "secret")
    os.environ.setdefault("CASEBRIDGE_UNIFORM_PASSWORD", "secret")
    started: list[Callable[[], None]] = []
    try:
        receiver = _listening("webhook receiver (the CRM and other targets)", host, receiver_port,
                              "--demo-receiver-port", lambda: start_demo_receiver(host, receiver_port))
        started.append(lambda: _stop(receiver))
        confirm = _listening("Confirm simulator", host, confirm_port, "--demo-confirm-port",
                             lambda: ConfirmSimulator(host=host, port=confirm_port))
        started.append(confirm.close)
        uniform = _listening("Uniform simulator", host, uniform_port, "--demo-uniform-port",
                             lambda: UniformSimulator(host=host, port=uniform_port))
    except BaseException:
        for close in reversed(started):
            close()
        raise
    stand_ins = DemoStandIns(receiver, confirm, uniform)
    for name, path in RECEIVER_URLS.items():
        os.environ.setdefault(name, f"{stand_ins.receiver_url}{path}")
    os.environ.setdefault("CASEBRIDGE_CONFIRM_URL", confirm.url)
    os.environ.setdefault("CASEBRIDGE_UNIFORM_URL", uniform.url)
    return stand_ins


def _listening(what: str, host: str, port: int, flag: str, start: Callable[[], ServerT]) -> ServerT:
    try:
        return start()
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise DemoPortBusy(what, host, port, flag) from exc
        raise


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
                f"[green]demo target {self.path}[/green] received {event.get('event_type')} for case "
                f"{event.get('case', {}).get('case_id')}{status} -> reference {reference}"
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
    threading.Thread(target=server.serve_forever, name="demo-receiver", daemon=True).start()
    return server


def continue_numbering(broker: Broker, confirm: ConfirmSimulator, uniform: UniformSimulator) -> None:
    """Number new enquiries and service requests after the highest references the store already holds for the
    Confirm and Uniform targets: a demo run again on the same store must not hand a new case an old case's number."""
    from sqlalchemy import select

    from broker.store.tables import ExternalRef

    kinds = {name: target.definition.adapter for name, target in broker.configuration.targets.items()}
    highest = {"confirm": 0, "uniform": 0}
    with broker.store.read() as session:
        rows = session.execute(select(ExternalRef.target, ExternalRef.reference)
                               .where(ExternalRef.target.in_([name for name, kind in kinds.items()
                                                              if kind in highest])))
        for target, reference in rows:
            kind = kinds[target]
            found = (_CONFIRM_NUMBER if kind == "confirm" else _UNIFORM_NUMBER).fullmatch(reference)
            if found:
                highest[kind] = max(highest[kind], int(found.group(found.lastindex or 0)))
    confirm.number_after(highest["confirm"])
    uniform.number_after(highest["uniform"])


def start_demo_confirm(broker: Broker, simulator: ConfirmSimulator, *, stop: threading.Event) -> None:
    """The Confirm simulator's busy officer, and a poll of its status changes every ten seconds."""
    from broker.scheduling.context import JobContext
    from broker.scheduling.jobs import poll_lob_status_changes

    context = JobContext(broker.store, broker.configuration, broker.intake)
    steps = [("1000", "3000", "Inspected: works ordered"), ("3000", "4000", "Pothole filled")]

    def officer_and_poll() -> None:
        while not stop.wait(10):
            for number, enquiry in list(simulator.enquiries.items()):
                for before, after, notes in steps:
                    if enquiry.status == before:
                        simulator.officer_sets_status(number, after, notes)
                        _console.print(f"[yellow]Confirm officer[/yellow] moved enquiry {number} to {after}: {notes}")
                        break
            try:
                poll_lob_status_changes(context, {"first_look_back_minutes": 60, "targets": ["confirm"]})
                broker.wake_relay()
            except Exception as exc:  # a demo keeps going
                _console.print(f"[red]polling Confirm failed: {exc}[/red]")

    threading.Thread(target=officer_and_poll, name="demo-confirm-officer", daemon=True).start()
    _console.print(f"Demo Confirm simulator on {simulator.url} (enquiries move on every ten seconds)")


def start_demo_uniform(broker: Broker, simulator: UniformSimulator, *, stop: threading.Event) -> None:
    """The Uniform simulator's officer, who investigates, then closes, each new service request; polled every ten
    seconds."""
    from broker.scheduling.context import JobContext
    from broker.scheduling.jobs import poll_lob_status_changes

    context = JobContext(broker.store, broker.configuration, broker.intake)
    steps = {"1_REC": ("4_INV", None, "visiting"), "4_INV": ("8_CLO", "RESFIX", "closed it: resolved")}

    def officer_and_poll() -> None:
        while not stop.wait(10):
            for reference, request in list(simulator.requests.items()):
                if request.status in steps:
                    status, closing_action, words = steps[request.status]
                    simulator.officer_sets_status(reference, status, closing_action)
                    _console.print(f"[yellow]Uniform officer[/yellow] {words}: request {reference} is {status}"
                                   + (f" / {closing_action}" if closing_action else ""))
            try:
                poll_lob_status_changes(context, {"first_look_back_minutes": 60, "targets": ["uniform"]})
                broker.wake_relay()
            except Exception as exc:  # a demo keeps going
                _console.print(f"[red]polling Uniform failed: {exc}[/red]")

    threading.Thread(target=officer_and_poll, name="demo-uniform-officer", daemon=True).start()
    _console.print(f"Demo Uniform simulator on {simulator.url} (requests move on every ten seconds)")
