"""``broker run --demo``: stand-ins for the systems around Casebridge, so a newcomer can watch a case travel.

A webhook receiver on 127.0.0.1:8025 plays the environment team, the waste contractor and the CRM (it prints what
it receives); a Confirm simulator on 127.0.0.1:8026 plays the highways system, with an officer who moves each
new enquiry on after a few seconds; a Uniform simulator on 127.0.0.1:8027 plays environmental health, with an
officer who investigates and then closes each new service request; and both systems' status changes are polled
every ten seconds, so they come back to the CRM while you watch.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from broker.runtime import Broker

_console = Console(stderr=True)


#: Signing secrets the shipped routes.yaml names, given throwaway values for the demo only.
DEMO_SECRETS = ("CASEBRIDGE_CRM_WEBHOOK_SECRET", "CASEBRIDGE_ENVIRONMENT_WEBHOOK_SECRET")


def start_demo_receiver(host: str = "127.0.0.1", port: int = 8025) -> ThreadingHTTPServer:
    """Serve on a thread; every POST gets 201 and a reference such as DEMO-000001."""
    for name in DEMO_SECRETS:
        os.environ.setdefault(name, "demo-only-secret")
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


def start_demo_confirm(broker: Broker, *, port: int = 8026, stop: threading.Event) -> None:
    """A Confirm simulator with a busy officer, and a poll of its status changes every ten seconds."""
    from adapters.confirm.simulator import ConfirmSimulator
    from broker.jobs import JobContext, poll_lob_status_changes

    os.environ.setdefault("CASEBRIDGE_CONFIRM_PASSWORD", "secret")
    simulator = ConfirmSimulator(port=port)
    context = JobContext(broker.store, broker.topology, broker.configuration, broker.intake)
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


def start_demo_uniform(broker: Broker, *, port: int = 8027, stop: threading.Event) -> None:
    """A Uniform simulator whose officer investigates, then closes, each new service request; polled every ten
    seconds."""
    from adapters.uniform.simulator import UniformSimulator
    from broker.jobs import JobContext, poll_lob_status_changes

    os.environ.setdefault("CASEBRIDGE_UNIFORM_PASSWORD", "secret")
    simulator = UniformSimulator(port=port)
    context = JobContext(broker.store, broker.topology, broker.configuration, broker.intake)
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
