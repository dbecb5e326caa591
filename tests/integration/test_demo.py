"""``broker run --demo`` as a newcomer runs it: its stand-ins' ports, and running it again on the same store."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from support.envelopes import case_created
from support.harness import REPO
from support.processes import broker_env, printed_after, run_broker
from support.soap_targets import ANY_DEMO_PORTS, demo_process


@pytest.mark.parametrize("stand_in", ["receiver", "confirm", "uniform"])
def test_a_busy_port_is_named_with_the_flag_that_changes_it(stand_in: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        flag = "--demo-receiver-port" if stand_in == "receiver" else f"--demo-port {stand_in}=<port>"
        ports = {"receiver": "0", "confirm": "0", "uniform": "0", stand_in: str(busy)}
        options = ["--demo-receiver-port", ports["receiver"], "--demo-port", f"confirm={ports['confirm']}",
                   "--demo-port", f"uniform={ports['uniform']}"]
        env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"),
                         http_port=str(busy))
        result = run_broker("run", "--demo", *options, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if str(busy) in line]
    assert "in use" in line and flag in line and "0 picks a free one" in line


def test_the_stand_ins_ports_are_settings_too(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"),
                         demo_receiver_port="0", demo_ports=f'{{"confirm": 0, "uniform": {busy}}}')
        result = run_broker("run", "--demo", env=env, cwd=tmp_path)
    assert result.returncode == 2 and f"Port {busy}" in result.stderr and "--demo-port uniform" in result.stderr


def heard_of(demo_output: str, case_id: str) -> bool:
    return f"received case.status_changed for case {case_id}" in demo_output


@pytest.mark.slow
def test_a_second_run_on_the_same_store_carries_a_new_cases_progress_back(tmp_path: Path) -> None:
    """The Confirm stand-in starts afresh each run; it must not hand the new case an old case's enquiry number,
    or the new case's status changes would be taken for the old one's, already seen, and never reach the CRM."""
    numbers = []
    for case_id in ("DEMO-AGAIN-1", "DEMO-AGAIN-2"):
        demo, url = demo_process(tmp_path, *ANY_DEMO_PORTS)
        try:
            demo.wait_for_http(f"{url}/health")
            key = printed_after(demo, "Demo API key for system 'crm':")
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
                pothole = case_created(case_id, reporter={"kind": "anonymous"})
                assert client.post("/v1/cases", json=pothole).status_code == 202
                deadline = time.monotonic() + 90  # the officer moves it on every ten seconds, then it is polled
                while not heard_of(demo.output(), case_id):
                    assert time.monotonic() < deadline, demo.output()
                    time.sleep(0.5)
                numbers.append(client.get(f"/v1/cases/{case_id}").json()["external_refs"]["confirm"])
        finally:
            assert demo.terminate() == 0, demo.output()
    assert not heard_of(demo.output(), "DEMO-AGAIN-1")  # the second run sends the first case's news no more
    assert int(numbers[1]) > int(numbers[0])
    assert (tmp_path / "casebridge.db").exists()
