"""A target that keeps failing is paused, probed, and resumed by itself; `broker status` shows it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.envelopes import case_created
from support.harness import RunningBroker
from support.processes import broker_env, run_broker
from support.receiver import WebhookReceiver

from broker.config.models import CircuitPolicy
from broker.delivery.circuit import CircuitBreaker


def test_breaker_opens_probes_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker("t", CircuitPolicy(failures=2, open_seconds=10, max_open_seconds=30),
                             clock=lambda: now[0])
    breaker.failed("http_503")
    assert breaker.seconds_until_probe() == 0 and breaker.state == "closed"
    breaker.failed("http_503")
    assert breaker.state == "open" and breaker.seconds_until_probe() == 10
    now[0] = 10.0
    assert breaker.seconds_until_probe() == 0 and breaker.state == "half_open"
    breaker.failed("http_503")  # the probe failed: twice as long
    assert breaker.state == "open" and breaker.seconds_until_probe() == 20
    now[0] = 30.0
    assert breaker.seconds_until_probe() == 0
    breaker.failed("http_503")
    assert breaker.seconds_until_probe() == 30  # never more than max_open_seconds
    now[0] = 60.0
    breaker.seconds_until_probe()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.failures == 0
    breaker.failed("http_503")
    assert breaker.state == "closed"  # the count started again


def status(running: RunningBroker, tmp_path: Path) -> dict[str, dict[str, object]]:
    settings = running.settings
    env = broker_env(database_url=settings.database_url, mappings_dir=str(settings.mappings_dir),
                     amqp_url=settings.amqp_url, amqp_namespace=settings.amqp_namespace)
    result = run_broker("status", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return {target["target"]: target for target in json.loads(result.stdout)["targets"]}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_failing_target_is_paused_then_resumed(running: RunningBroker, receiver: WebhookReceiver,
                                                 tmp_path: Path) -> None:
    receiver.outage(12)  # long enough to outlast the look at the open circuit below, however busy the machine
    for n in range(12):
        assert running.post_case(case_created(f"CB-{n:02d}")).status_code == 202
    running.wait_until(lambda: status(running, tmp_path)["highways"]["circuit"] == "open", timeout=20,
                       what="the circuit to open")
    calls_when_opened = len(receiver.on("/highways"))
    time.sleep(2.5)
    # While open the target is left alone but for the occasional probe (each probe is one delivery's calls).
    assert len(receiver.on("/highways")) - calls_when_opened <= 4
    assert running.post_case(case_created("CB-LATE")).status_code == 202  # cases are still accepted

    assert running.wait_settled(timeout=60) == {"delivered": 13}
    assert set(receiver.event_counts("/highways").values()) == {1}
    highways = status(running, tmp_path)["highways"]
    assert highways["circuit"] == "closed" and highways["deliveries"] == {"delivered": 13}
    if running.settings.uses_rabbitmq:
        assert highways["queued_messages"] == 0 and highways["consumers"] == 1
