"""The ``broker`` command run as real operating-system processes, as an operator would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from support.harness import REPO, free_port

BROKER_COMMAND = str(Path(sys.executable).with_name("broker"))


def broker_env(**settings: str) -> dict[str, str]:
    """The current environment without any CASEBRIDGE_* leaking in, plus ``settings`` (names without prefix)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CASEBRIDGE_")}
    env.update({f"CASEBRIDGE_{name.upper()}": value for name, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_broker(*args: str, env: Mapping[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BROKER_COMMAND, *args], env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


class BrokerProcess:
    """One long-running ``broker <command>``; its output goes to a file the test can read."""

    def __init__(self, *args: str, env: Mapping[str, str], cwd: Path, name: str) -> None:
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([BROKER_COMMAND, *args], env=dict(env), cwd=cwd, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"process exited ({self.process.returncode}) before printing {text!r}:\n"
                                     f"{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed within {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def wait_for_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"process exited ({self.process.returncode}):\n{self.output()}")
            try:
                if httpx.get(url, timeout=1).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as an orchestrator stops a container; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@contextmanager
def running_demo_process(cwd: Path) -> Iterator[tuple[BrokerProcess, str]]:
    """``broker run --demo`` with the shipped mappings on a free port, once it answers: the process and its base
    URL. The demo must stop cleanly."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = broker_env(mappings_dir=str(REPO / "mappings"), schedules_dir=str(REPO / "schedules"), http_port=str(port))
    demo = BrokerProcess("run", "--demo", env=env, cwd=cwd, name="demo")
    try:
        demo.wait_for_http(f"{url}/health")
        yield demo, url
    finally:
        assert demo.terminate() == 0, demo.output()


def printed_after(process: BrokerProcess, marker: str) -> str:
    """The word a process prints after ``marker`` (a key or password it shows once), waiting for it."""
    process.wait_for_output(marker)
    return process.output().split(marker)[1].split()[0]
