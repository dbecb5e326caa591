"""A broker running inside the test process: real uvicorn server, real relay and consumers."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select

from broker.plugins.contract import Adapter
from broker.plugins.registry import build_adapter
from broker.runtime.process import Broker
from broker.settings import Settings
from broker.store.keys import create_key
from broker.store.tables import DeliveryRecord

REPO = Path(__file__).resolve().parents[2]

ROUTES = """\
targets:
  highways:
    adapter: webhook
    settings:
      url: {url}/highways
      lookup_url: {url}/highways/lookup
      timeout_seconds: {timeout}
    retry:
      delays_seconds: [0.3, 0.6]
      jitter: 0
    circuit:
      failures: 3
      open_seconds: 1
      max_open_seconds: 2
  environment:
    adapter: webhook
    settings:
      url: {url}/environment
    retry:
      delays_seconds: [0.3]
      jitter: 0
      give_up_after_hours: 0.0005
    circuit:
      failures: 3
      open_seconds: 0.5
      max_open_seconds: 1
  crm:
    adapter: webhook
    system: crm
    settings:
      url: {url}/crm
  waste:
    adapter: webhook
    settings:
      url: {url}/waste
routes:
  - name: highways
    services: ["highways.*"]
    deliver:
      - target: highways
  - name: environment
    services: ["environment.*"]
    deliver:
      - target: environment
  - name: status back to the CRM
    services: ["*"]
    events: [case.status_changed, case.closed]
    deliver:
      - target: crm
  - name: waste overnight
    services: ["waste.*"]
    events: [case.created]
    deliver:
      - target: waste
        mode: batch
"""


def write_mappings(directory: Path, receiver_url: str, *, timeout_seconds: float = 5) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "mappings" / "services.yaml", directory / "services.yaml")
    (directory / "routes.yaml").write_text(ROUTES.format(url=receiver_url, timeout=timeout_seconds))
    (directory / "highways.yaml").write_text(
        "service_codes:\n  highways.pothole: POT\n  highways.street_light: SL01\n"
    )
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RunningBroker:
    """Starts relay, consumers and the HTTP API; ``client`` is authenticated as system ``crm``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = Broker(settings)
        self.broker.migrate()
        self.api_key = create_key(self.broker.store, "crm")
        self.broker.start_relay()
        self.broker.start_workers()
        assert self.broker.wait_ready(30), "broker threads did not connect"
        self.port = free_port()
        config = uvicorn.Config(self.broker.api_app(), host="127.0.0.1", port=self.port, log_config=None,
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.server_thread = threading.Thread(target=self.server.run, daemon=True)
        self.server_thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "API server did not start"
            time.sleep(0.02)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"},
                                   timeout=30)

    def post_case(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.client.post("/v1/cases", json=body, **kwargs)

    def post_event(self, case_id: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.client.post(f"/v1/cases/{case_id}/events", json=body, **kwargs)

    def delivery_states(self) -> dict[str, int]:
        with self.broker.store.read() as session:
            states = session.scalars(select(DeliveryRecord.state)).all()
        counts: dict[str, int] = {}
        for state in states:
            counts[state] = counts.get(state, 0) + 1
        return counts

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_settled(self, timeout: float = 60.0) -> dict[str, int]:
        """Wait until no real-time delivery is pending; returns the count of deliveries per state."""
        self.wait_until(lambda: not {"pending", "in_flight", "waiting", "retrying"} & set(self.delivery_states()),
                        timeout,
                        "deliveries to settle")
        return self.delivery_states()

    def broker_adapters(self) -> dict[str, Adapter[Any]]:
        """Fresh adapters for the configured targets, for tests that play a worker themselves."""
        return {
            name: build_adapter(target.definition.adapter, name, target.settings, target.mapping)
            for name, target in self.broker.configuration.targets.items()
        }

    def stop(self) -> None:
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        self.client.close()
        self.server.should_exit = True
        self.server_thread.join(10)
        self.broker.shutdown()
