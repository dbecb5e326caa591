"""Confirm and Uniform, the SOAP line-of-business targets, as the tests meet them: a simulator to talk to (in its
lenient or its strict profile), an adapter built against it, a broker's routes and mappings for them, the
``broker`` commands that reach them, and the demo that runs both."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import pytest
import yaml
from sqlalchemy import select

from adapters.common.soap_server import PROFILES, SoapSimulatorServer
from adapters.confirm.adapter import ConfirmAdapter
from adapters.confirm.simulator import ConfirmSimulator
from adapters.uniform.adapter import UniformAdapter
from adapters.uniform.simulator import UniformSimulator
from broker.errors import DeliveryUnconfirmed, PermanentDeliveryError, TransientDeliveryError
from broker.model import parse_event
from broker.plugins.contract import Adapter, DeliveryOutcome, DeliveryRequest
from broker.plugins.registry import build_adapter
from broker.scheduling.context import JobContext
from broker.scheduling.jobs import poll_lob_status_changes
from broker.store.tables import FailedMessage
from support.harness import REPO, RunningBroker, free_port
from support.processes import BrokerProcess, broker_env, printed_after

AdapterT = TypeVar("AdapterT", bound=Adapter[Any])
SimulatorT = TypeVar("SimulatorT", bound=SoapSimulatorServer)

#: What a stand-in server answers: HTTP status, body and headers.
Reply = tuple[int, bytes, dict[str, str]]

#: Every adapter test runs against both simulator profiles: parametrise a simulator fixture with these.
PROFILE_PARAMS = [pytest.param(profile, id=profile) for profile in PROFILES]

CRM_ROUTE = {"name": "status changes back to the CRM", "services": ["*"],
             "events": ["case.status_changed", "case.closed"], "deliver": [{"target": "crm"}]}


@dataclass(frozen=True)
class SoapTarget(Generic[AdapterT, SimulatorT]):
    """One SOAP target: the adapter and simulator of the same name, and the mapping shipped for it."""

    name: str
    adapter_class: type[AdapterT]
    simulator_class: Callable[..., SimulatorT]

    @property
    def password_env(self) -> str:
        """The variable the tests keep the target's password in, so no real one is ever read."""
        return f"CASEBRIDGE_TEST_{self.name.upper()}_PASSWORD"

    def mapping(self) -> dict[str, Any]:
        """A fresh copy of the shipped mapping, free to change."""
        mapping: dict[str, Any] = yaml.safe_load((REPO / "mappings" / f"{self.name}.yaml").read_text())
        return mapping

    def simulated(self, **options: Any) -> Iterator[SimulatorT]:
        """A running simulator for a fixture to ``yield from`` (``profile="strict"`` for one that does only what the
        product's documentation promises); closed when the fixture ends."""
        simulator = self.simulator_class(**options)
        try:
            yield simulator
        finally:
            simulator.close()

    def adapter(self, url: str, monkeypatch: pytest.MonkeyPatch, *, password: str = "secret",
                mapping: dict[str, Any] | None = None, **settings: Any) -> AdapterT:
        """The adapter as the broker builds it, for the target at ``url`` with ``password``."""
        monkeypatch.setenv(self.password_env, password)
        adapter = build_adapter(self.name, self.name, {
            "url": url, "username": "casebridge", "password_env": self.password_env, "database_id": "DEMO",
            **settings,
        }, self.mapping() if mapping is None else mapping)
        assert isinstance(adapter, self.adapter_class)
        return adapter

    def connected(self, simulator: SimulatorT, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdapterT]:
        """An adapter to ``simulator`` for a fixture to ``yield from``; closed when the fixture ends."""
        adapter = self.adapter(simulator.url, monkeypatch)
        try:
            yield adapter
        finally:
            adapter.close()

    def request(self, document: dict[str, Any], *, external_ref: str | None = None,
                our_reference: str = "CB-0001") -> DeliveryRequest:
        """``document`` as a first attempt to deliver it to this target."""
        return DeliveryRequest(target=self.name, event=parse_event(json.dumps(document).encode()),
                               our_reference=our_reference, external_ref=external_ref, attempt=1)

    def assert_wrong_password_is_refused(self, url: str, monkeypatch: pytest.MonkeyPatch,
                                         sent: DeliveryRequest) -> None:
        """Delivering ``sent`` with the wrong password fails for good, as ``<target>_authentication``, and the
        message names the credentials as the fault."""
        adapter = self.adapter(url, monkeypatch, password="wrong")
        with pytest.raises(PermanentDeliveryError) as caught:
            adapter.deliver(sent)
        assert caught.value.reason == f"{self.name}_authentication"
        assert "credentials" in caught.value.message

    def broker_mappings(self, directory: Path, monkeypatch: pytest.MonkeyPatch, *, url: str, crm_url: str,
                        route: dict[str, Any], mapping: dict[str, Any] | None = None, **settings: Any) -> Path:
        """A broker's mappings folder that sends ``route`` to this target at ``url`` (with ``settings`` besides the
        usual ones) and status changes to a CRM webhook at ``crm_url``. Services are as shipped, and so is this
        target's mapping unless ``mapping`` is given."""
        monkeypatch.setenv(self.password_env, "secret")
        directory.mkdir()
        shutil.copy(REPO / "mappings" / "services.yaml", directory)
        if mapping is None:
            shutil.copy(REPO / "mappings" / f"{self.name}.yaml", directory)
        else:
            (directory / f"{self.name}.yaml").write_text(yaml.safe_dump(mapping))
        (directory / "routes.yaml").write_text(yaml.safe_dump(self._routes(url, crm_url, route, settings),
                                                              sort_keys=False))
        return directory

    def _routes(self, url: str, crm_url: str, route: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """One quick retry and a one-second timeout, so a slow or failing target shows within a test."""
        target = {
            "adapter": self.name, "system": self.name,
            "settings": {"url": url, "username": "casebridge", "password_env": self.password_env,
                         "database_id": "DEMO", "timeout_seconds": 1, "lookup_timeout_seconds": 5, **settings},
            "retry": {"delays_seconds": [0.3], "jitter": 0},
        }
        crm = {"adapter": "webhook", "system": "crm", "settings": {"url": f"{crm_url}/crm"}}
        return {"targets": {self.name: target, "crm": crm},
                "routes": [{**route, "deliver": [{"target": self.name}]}, CRM_ROUTE]}

    def command_env(self, tmp_path: Path, url: str) -> tuple[Path, dict[str, str]]:
        """A copy of the shipped mappings to change, and the environment of a ``broker`` command that reads them and
        reaches this target at ``url`` under the shipped routes."""
        mappings = tmp_path / "mappings"
        shutil.copytree(REPO / "mappings", mappings)
        env = broker_env(mappings_dir=str(mappings), schedules_dir=str(REPO / "schedules"))
        prefix = f"CASEBRIDGE_{self.name.upper()}"
        env.update({f"{prefix}_URL": url, f"{prefix}_PASSWORD": "secret"})
        return mappings, env


CONFIRM = SoapTarget("confirm", ConfirmAdapter, ConfirmSimulator)
UNIFORM = SoapTarget("uniform", UniformAdapter, UniformSimulator)


def assert_unmapped_service_is_refused(adapter: Adapter[Any], sent: DeliveryRequest, service_code: str) -> None:
    """``sent`` names ``service_code``, which the adapter's mapping lacks: it fails for good, saying which code."""
    with pytest.raises(PermanentDeliveryError) as caught:
        adapter.deliver(sent)
    assert caught.value.reason == "unmapped_service_code" and service_code in caught.value.message


def assert_drops_and_5xx_are_transient(adapter: Adapter[Any], simulator: SoapSimulatorServer,
                                       sending: Callable[[], DeliveryRequest]) -> None:
    """A dropped connection and an HTTP 503 may both be tried again, and the next try gets through."""
    simulator.drop_next()
    with pytest.raises(TransientDeliveryError):
        adapter.deliver(sending())
    simulator.fail_next(503)
    with pytest.raises(TransientDeliveryError) as caught:
        adapter.deliver(sending())
    assert caught.value.reason == "http_503"
    assert adapter.deliver(sending()).external_ref


def retried(sent: DeliveryRequest, first_attempt_at: datetime) -> DeliveryRequest:
    """``sent`` as the core asks the target about it before trying again: a second attempt, with the first
    attempt's start."""
    return replace(sent, attempt=sent.attempt + 1, first_attempt_at=first_attempt_at)


def timed_out(adapter: Adapter[Any], simulator: SoapSimulatorServer, sent: DeliveryRequest) -> DeliveryRequest:
    """Deliver ``sent`` to a simulator that does the work (commits) but answers after the adapter gave up: a
    timeout, which may have landed. Returns the request as the core then asks about it."""
    started = datetime.now(UTC)
    simulator.slow_next(1.5)
    with pytest.raises(TransientDeliveryError) as caught:
        adapter.deliver(sent)
    assert caught.value.reason == "timeout" and caught.value.may_have_landed
    return retried(sent, started)


def timed_out_then_found(adapter: Adapter[Any], simulator: SoapSimulatorServer,
                         sent: DeliveryRequest) -> DeliveryOutcome:
    """Deliver ``sent`` so that it times out after committing, then ask the adapter, as the core will, whether it
    landed: it must say so (never "not there"); returns what it found."""
    again = timed_out(adapter, simulator, sent)
    found = adapter.find_delivered(again)
    assert found is not None, "the adapter claimed a committed create was not there"
    return found


def never_claims_absent(adapter: Adapter[Any], sent: DeliveryRequest) -> DeliveryOutcome | DeliveryUnconfirmed:
    """What ``find_delivered`` answers for ``sent``: the outcome, or DeliveryUnconfirmed; never None, which would let
    the core create again on a look-up that cannot tell."""
    try:
        found = adapter.find_delivered(sent)
    except DeliveryUnconfirmed as unconfirmed:
        return unconfirmed
    assert found is not None, "the adapter claimed 'not there' on a look-up that cannot tell"
    return found


@contextmanager
def answering(answer: Callable[[bytes], Reply]) -> Iterator[str]:
    """A server that answers each request body with ``answer(body)``, as XML unless it names another Content-Type:
    for answers a simulator never gives."""
    class Answering(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status, body, headers = answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(status)
            self.send_header("Content-Type", headers.get("Content-Type", "text/xml; charset=utf-8"))
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                if name != "Content-Type":
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def poll(running: RunningBroker) -> dict[str, object]:
    """Run the scheduled poll of every target for status changes once, now, and relay what it emitted."""
    broker = running.broker
    context = JobContext(broker.store, broker.configuration, broker.intake)
    result = poll_lob_status_changes(context, {"first_look_back_minutes": 5})
    broker.wake_relay()
    return result


def failure_of(running: RunningBroker, case: dict[str, Any]) -> FailedMessage:
    """Send ``case`` and wait until its one delivery has failed; what the broker recorded of the failure."""
    running.post_case(case)
    assert running.wait_settled() == {"failed": 1}
    with running.broker.store.read() as session:
        return session.scalars(select(FailedMessage)).one()


#: ``broker run --demo`` on ports of its own choosing: never in the way of another demo or test.
ANY_DEMO_PORTS = ("--demo-receiver-port", "0", "--demo-port", "confirm=0", "--demo-port", "uniform=0")


def demo_process(cwd: Path, *options: str, port: int | None = None) -> tuple[BrokerProcess, str]:
    """``broker run --demo`` with the shipped mappings in ``cwd`` (its store is ``cwd/casebridge.db``), with
    ``options``; the process and its base URL."""
    port = port or free_port()
    env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"), http_port=str(port))
    return BrokerProcess("run", "--demo", *options, env=env, cwd=cwd, name=f"demo-{port}"), f"http://127.0.0.1:{port}"


@contextmanager
def running_demo(tmp_path: Path) -> Iterator[tuple[BrokerProcess, httpx.Client]]:
    """``broker run --demo`` with the shipped mappings (its stand-ins on free ports), and a client signed in with
    the API key it prints for the CRM; the demo must stop cleanly."""
    demo, url = demo_process(tmp_path, *ANY_DEMO_PORTS)
    try:
        demo.wait_for_http(f"{url}/health")
        key = printed_after(demo, "Demo API key for system 'crm':")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            yield demo, client
    finally:
        assert demo.terminate() == 0, demo.output()
