"""Every route of the OpenAPI documents (the API's and the Open311 endpoint's), fuzzed by schemathesis against a live
broker: no 5xx, and every answer the document describes matches its schema. A bounded number of examples per route,
so it stays quick."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from support.console import PASSWORD
from support.harness import RunningBroker, write_mappings
from support.receiver import WebhookReceiver

from broker.console.accounts import create_user
from broker.settings import Settings
from broker.store.keys import create_key


class Live:
    """A broker on a socket with a key for ``crm`` and a signed-in operator, for the fuzzer to use."""

    def __init__(self, folder: Path) -> None:
        self.receiver = WebhookReceiver()
        (folder / "schedules").mkdir()
        self.running = RunningBroker(Settings(
            database_url=f"sqlite:///{folder / 'fuzz.db'}", amqp_url="memory://", amqp_namespace="fuzz",
            mappings_dir=write_mappings(folder / "mappings", self.receiver.url), schedules_dir=folder / "schedules",
            outbox_poll_seconds=0.2,
        ))
        create_user(self.running.broker.store, "fuzzer", "operator", PASSWORD)
        session = httpx.post(f"{self.running.base_url}/v1/console/session",
                             json={"name": "fuzzer", "password": PASSWORD})
        self.cookies = dict(session.cookies)
        self.headers = {"Authorization": f"Bearer {self.running.api_key}", "X-CSRF-Token": session.json()["csrf_token"]}
        self.open311_key = create_key(self.running.broker.store, "fixmystreet")

    def close(self) -> None:
        self.running.stop()
        self.receiver.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    broker = Live(tmp_path_factory.mktemp("fuzz"))
    yield broker
    broker.close()


def openapi_document() -> dict[str, Any]:
    """The document a running broker serves at /openapi.json, from the same app factories (no store needed)."""
    from broker.api.app import ApiContext, create_app
    from broker.console.app import install_console
    from broker.console.security import ConsoleContext

    app = create_app(ApiContext(store=None, intake=None, after_accept=lambda: None))  # type: ignore[arg-type]
    install_console(app, ConsoleContext(store=None, intake=None, targets=[],  # type: ignore[arg-type]
                                        schedules=[]))
    return app.openapi()


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_route_answers_5xx_or_outside_its_schema(case: Any, live: Live) -> None:
    headers = {**(case.headers or {}), **live.headers}
    response = case.call(base_url=live.running.base_url, headers=headers, cookies=live.cookies, timeout=30)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


def open311_document() -> dict[str, Any]:
    """The Open311 endpoint's own document (served at /open311/v2/openapi.json)."""
    from broker.open311.app import Open311Context, open311_app

    app = open311_app(Open311Context(store=None, intake=None, after_accept=lambda: None,  # type: ignore[arg-type]
                                     public_base_url="http://127.0.0.1"))
    return app.openapi()


open311_schema = schemathesis.openapi.from_dict(open311_document())


@open311_schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_open311_route_answers_5xx_or_outside_its_schema(case: Any, live: Live) -> None:
    """Where the fuzzer sends an api_key it sends the real one, so the routes behind the key are fuzzed too."""
    for parameters in (case.query, case.body):
        if isinstance(parameters, dict) and "api_key" in parameters:
            parameters["api_key"] = live.open311_key
    response = case.call(base_url=f"{live.running.base_url}/open311/v2", timeout=30)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
