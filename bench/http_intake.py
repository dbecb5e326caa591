"""Latency and sustained rate of HTTP intake under an open-loop load, beside a floor measured in the same run.

The load is open-loop, as CRMs and portals post: request *i* is due at ``start + i / rate`` whether or not earlier
ones have been answered, over up to ``--connections`` keep-alive connections. Latency is counted from when a
request was due (so time spent waiting for a free connection counts) to its 202, and to its arrival at the target
(a stand-in LOB system behind the webhook adapter). Each set-up is run at every offered rate for ``--seconds``:

- **floor**: uvicorn (the server ``broker api`` runs in) answering 202 after one INSERT of the body into
  PostgreSQL per request (``bench/http_floor.py``); nothing of Casebridge.
- **embedded**: ``broker run`` on SQLite and the in-process transport, the README's default.
- **api**: ``broker api`` and two ``broker worker`` processes on PostgreSQL and RabbitMQ.
- **api, no group commit**: the same with ``CASEBRIDGE_API_GROUP_COMMIT_MS=0``, one transaction per request.
- **api, routes only**: the same with ``CASEBRIDGE_API_FAST_INTAKE=false``, every request through FastAPI's routes.
- **api --workers 2**: two API processes sharing the port.

    .venv/bin/python bench/http_intake.py                       # every set-up; results written to docs/benchmarks.md
    .venv/bin/python bench/http_intake.py --setups floor,api --rates 100,300 --seconds 5 --output -
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cases import envelope
from databases import fresh_database
from procs import children, cpu_seconds, peak_rss_mb, rss_mb
from receiver import Receiver, write_webhook_mappings
from report import write_section
from services import delete_namespace, postgres_version, rabbitmq_version

REPO = Path(__file__).resolve().parents[1]
BROKER = str(Path(sys.executable).with_name("broker"))
RESULTS_START = "<!-- http intake results -->"
RESULTS_END = "<!-- end http intake results -->"
TRACK = rb'"(HB-\d+-\d+-\d+)"'
API_WORKERS = 2
#: Each batch of posted cases (a warm-up or a step) gets numbers of its own, so no case id is ever sent twice.
_batches = itertools.count()


# --- the load --------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    case_id: str
    due: float
    answered: float = 0.0
    status: int = 0


class _Pool:
    """Keep-alive HTTP/1.1 connections, opened as needed up to ``size``; a closed one is replaced. A connection idle
    for longer than ``IDLE_SECONDS`` is closed rather than reused: the server closes its side after five seconds
    (uvicorn's keep-alive), and a request written into a connection it is closing fails without being read."""

    IDLE_SECONDS = 4.0

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: list[tuple[float, tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = []
        self.opened = 0
        self.freed = asyncio.Condition()

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            while not self.idle and self.opened >= self.size:
                await self.freed.wait()
            while self.idle:
                since, connection = self.idle.pop()
                if time.monotonic() - since < self.IDLE_SECONDS:
                    return connection
                connection[1].close()
                self.opened -= 1
            self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except BaseException:
            await self.give_back(None)
            raise

    async def give_back(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        async with self.freed:
            if connection is None:
                self.opened -= 1
            else:
                self.idle.append((time.monotonic(), connection))
            self.freed.notify()

    async def close(self) -> None:
        for _since, (_reader, writer) in self.idle:
            writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bool]:
    """Send one request, read its response; (status, whether the server keeps the connection)."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    length = 0
    if (found := head.find(b"\r\ncontent-length:")) >= 0:
        length = int(head[found + 17:head.find(b"\r\n", found + 2)])
    await reader.readexactly(length)
    return status, b"\r\nconnection: close" not in head


def _request(host: str, port: int, key: str, body: bytes) -> bytes:
    return (b"POST /v1/cases HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s") % (
        host.encode(), port, key.encode(), len(body), body)


async def offer(base_url: str, key: str, rate: float, cases: list[str], connections: int) -> list[Sample]:
    """Post each case when it is due, at ``rate`` a second, not waiting for earlier answers."""
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    requests = [_request(host, port, key, envelope(case_id)) for case_id in cases]
    pool = _Pool(host, port, connections)
    start = time.monotonic() + 0.1
    samples = [Sample(case_id, start + n / rate) for n, case_id in enumerate(cases)]

    async def post(sample: Sample, request: bytes) -> None:
        connection = await pool.take()
        keep = False
        try:
            sample.status, keep = await _exchange(*connection, request)
        except (OSError, asyncio.IncompleteReadError):
            sample.status = -1  # the connection failed: counted as not accepted
        finally:
            sample.answered = time.monotonic()
            if not keep:
                connection[1].close()
            await pool.give_back(connection if keep else None)

    tasks = []
    for sample, request in zip(samples, requests, strict=True):
        if (wait := sample.due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(post(sample, request)))
    await asyncio.gather(*tasks)
    await pool.close()
    return samples


# --- the set-ups -----------------------------------------------------------------------------------------------

@dataclass
class Running:
    """A set-up under load: where to post, with which key, and the processes whose CPU and memory count."""

    base_url: str
    key: str
    measured: Callable[[], list[int]]
    delivers: bool = True


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer:\n{log.read_text()[-4000:]}")


@contextmanager
def _processes(folder: Path, commands: list[tuple[str, list[str]]],
               env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name, command in commands:
            log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            started.append(subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT))
        yield started
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


def _broker_env(folder: Path, receiver: Receiver, port: int, **settings: str) -> dict[str, str]:
    write_webhook_mappings(folder / "mappings", receiver.url)
    (folder / "schedules").mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("CASEBRIDGE_") and key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "CASEBRIDGE_MAPPINGS_DIR": str(folder / "mappings"), "CASEBRIDGE_SCHEDULES_DIR": str(folder / "schedules"),
        "CASEBRIDGE_HTTP_PORT": str(port), "CASEBRIDGE_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        "CASEBRIDGE_API_RATE_PER_SECOND": "0",  # one key carries the whole load: its rate is not what is measured
        **{f"CASEBRIDGE_{name.upper()}": value for name, value in settings.items()},
    })
    return env


def _key(env: dict[str, str], folder: Path) -> str:
    created = subprocess.run([BROKER, "keys", "create", "crm"], env=env, cwd=folder, capture_output=True,
                             text=True, check=True)
    return created.stdout.strip().splitlines()[-1]


@contextmanager
def floor(postgres_url: str, _amqp_url: str, _receiver: Receiver) -> Iterator[Running]:
    port = _free_port()
    with fresh_database(postgres_url) as database_url, tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        command = [sys.executable, str(REPO / "bench" / "http_floor.py"), "--port", str(port),
                   "--database-url", database_url]
        with _processes(folder, [("floor", command)], dict(os.environ)) as (server,):
            _wait_ready(f"http://127.0.0.1:{port}/", server, folder / "floor.log")
            yield Running(f"http://127.0.0.1:{port}", "unused", lambda: [server.pid], delivers=False)


@contextmanager
def embedded(_postgres_url: str, _amqp_url: str, receiver: Receiver) -> Iterator[Running]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        env = _broker_env(folder, receiver, port, database_url=f"sqlite:///{folder / 'casebridge.db'}",
                          amqp_url="memory://")
        key = _key(env, folder)
        with _processes(folder, [("run", [BROKER, "run"])], env) as (broker,):
            _wait_ready(f"http://127.0.0.1:{port}/health/ready", broker, folder / "run.log")
            yield Running(f"http://127.0.0.1:{port}", key, lambda: [broker.pid])


def split(api_workers: int = 1, **settings: str) -> Callable[[str, str, Receiver], Iterator[Running]]:
    """``broker api`` (with ``api_workers`` processes) and two ``broker worker`` on PostgreSQL and RabbitMQ."""

    @contextmanager
    def start(postgres_url: str, amqp_url: str, receiver: Receiver) -> Iterator[Running]:
        port = _free_port()
        namespace = f"cbhttp-{uuid.uuid4().hex[:8]}"
        with fresh_database(postgres_url) as database_url, tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            env = _broker_env(folder, receiver, port, database_url=database_url, amqp_url=amqp_url,
                              amqp_namespace=namespace, **settings)
            subprocess.run([BROKER, "db", "upgrade"], env=env, cwd=folder, check=True, capture_output=True)
            key = _key(env, folder)
            api = [BROKER, "api", *(["--workers", str(api_workers)] if api_workers > 1 else [])]
            commands = [("api", api), ("worker-0", [BROKER, "worker"]), ("worker-1", [BROKER, "worker"])]
            try:
                with _processes(folder, commands, env) as (server, *_workers):
                    _wait_ready(f"http://127.0.0.1:{port}/health/ready", server, folder / "api.log")
                    measured = (lambda: children(server.pid)) if api_workers > 1 else (lambda: [server.pid])
                    yield Running(f"http://127.0.0.1:{port}", key, measured)
            finally:
                delete_namespace(amqp_url, namespace)

    return start


SETUPS: dict[str, tuple[str, Callable[[str, str, Receiver], object]]] = {
    "floor": ("floor: uvicorn, one INSERT per request into PostgreSQL, 202", floor),
    "embedded": ("`broker run`: SQLite, in-process transport", embedded),
    "api": ("`broker api` + 2 `broker worker`: PostgreSQL, RabbitMQ", split()),
    "api-single-commits": ("the same, `CASEBRIDGE_API_GROUP_COMMIT_MS=0` (a transaction per request)",
                           split(api_group_commit_ms="0")),
    "api-routes": ("the same, `CASEBRIDGE_API_FAST_INTAKE=false` (every request through FastAPI's routes)",
                   split(api_fast_intake="false")),
    "api-2": (f"`broker api --workers {API_WORKERS}` + 2 `broker worker`: PostgreSQL, RabbitMQ",
              split(api_workers=API_WORKERS)),
}


# --- measuring -------------------------------------------------------------------------------------------------

def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Step:
    setup: str
    offered: float
    seconds: float
    sent: int
    accepted: int
    refused_busy: int
    failed: int
    sustained: float
    to_202: list[float] = field(repr=False)
    to_target: list[float] = field(repr=False)
    undelivered: int
    cpu_ms_per_case: float
    rss_mb: float


def case_ids(count: int) -> list[str]:
    batch = next(_batches)
    return [f"HB-{os.getpid()}-{batch}-{n}" for n in range(count)]


def measure(setup: str, running: Running, receiver: Receiver, rate: float, seconds: float, connections: int,
            drain_seconds: float) -> Step:
    cases = case_ids(max(1, int(rate * seconds)))
    pids = running.measured()
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    samples = asyncio.run(offer(running.base_url, running.key, rate, cases, connections))
    accepted = [sample for sample in samples if sample.status == 202]
    to_target: list[float] = []
    undelivered = 0
    if running.delivers:
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and any(s.case_id not in receiver.arrivals for s in accepted):
            time.sleep(0.05)
        arrived = [receiver.arrivals[s.case_id] - s.due for s in accepted if s.case_id in receiver.arrivals]
        to_target, undelivered = arrived, len(accepted) - len(arrived)
        ends = [receiver.arrivals[s.case_id] for s in accepted if s.case_id in receiver.arrivals]
    else:
        ends = [s.answered for s in accepted]
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    done = len(ends)
    sustained = done / (max(ends) - samples[0].due) if done else 0.0
    return Step(
        setup=setup, offered=rate, seconds=seconds, sent=len(samples), accepted=len(accepted),
        refused_busy=sum(1 for s in samples if s.status == 503), failed=sum(1 for s in samples
                                                                            if s.status not in (202, 503)),
        sustained=min(sustained, len(samples) / seconds), to_202=[s.answered - s.due for s in accepted],
        to_target=to_target, undelivered=undelivered,
        cpu_ms_per_case=cpu * 1000 / max(1, len(accepted)), rss_mb=sum(rss_mb(pid) for pid in pids),
    )


@dataclass
class SetupRun:
    name: str
    description: str
    steps: list[Step]
    rss_before_mb: float
    peak_rss_mb: float


def run_setup(name: str, postgres_url: str, amqp_url: str, receiver: Receiver, rates: list[float],
              seconds: float, connections: int) -> SetupRun:
    description, start = SETUPS[name]
    with start(postgres_url, amqp_url, receiver) as running:  # type: ignore[attr-defined]
        assert isinstance(running, Running)
        asyncio.run(offer(running.base_url, running.key, 50, case_ids(50), connections))  # pools, caches
        time.sleep(1)
        pids = running.measured()
        before = sum(rss_mb(pid) for pid in pids)
        steps = []
        for rate in rates:
            print(f"  {name} at {rate:g}/s ...", flush=True)
            step = measure(name, running, receiver, rate, seconds, connections, drain_seconds=max(30.0, seconds * 6))
            print(f"    sustained {step.sustained:.0f}/s, 202 p99 {percentile(step.to_202, 0.99) * 1000:.0f} ms, "
                  f"target p99 {percentile(step.to_target, 0.99) * 1000:.0f} ms, 503 {step.refused_busy}, "
                  f"RSS {step.rss_mb:.0f} MB", flush=True)
            steps.append(step)
            time.sleep(1)  # let what is left of the step finish before the next one starts
        peak = sum(peak_rss_mb(pid) for pid in running.measured())
    return SetupRun(name, description, steps, before, peak)


# --- report ----------------------------------------------------------------------------------------------------

def _ms(values: list[float], share: float) -> str:
    if not values:
        return "—"
    value = max(values) if share >= 1 else percentile(values, share)
    return f"{value * 1000:,.0f} ms" if value >= 0.01 else f"{value * 1000:.1f} ms"


def report(runs: list[SetupRun], postgres_url: str, amqp_url: str, seconds: float, connections: int) -> str:
    lines = [
        RESULTS_START,
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, PostgreSQL {postgres_version(postgres_url)} and RabbitMQ "
        f"{rabbitmq_version(amqp_url)} on the same machine as the load and the stand-in target; {seconds:g} s at "
        f"each offered rate over up to {connections} keep-alive connections; the in-flight bound at its default.",
        "",
        "| set-up | offered | sustained | 202 p50 | 202 p95 | 202 p99 | 202 max | target p50 | target p99 | "
        "target max | 503 busy | CPU/case | API RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        for step in run.steps:
            lost = f" ({step.undelivered} not arrived)" if step.undelivered else ""
            failed = f", {step.failed} failed" if step.failed else ""
            lines.append(
                f"| {run.name} | {step.offered:,.0f}/s | {step.sustained:,.0f}/s{lost} | {_ms(step.to_202, .5)} | "
                f"{_ms(step.to_202, .95)} | {_ms(step.to_202, .99)} | {_ms(step.to_202, 1)} | "
                f"{_ms(step.to_target, .5)} | {_ms(step.to_target, .99)} | {_ms(step.to_target, 1)} | "
                f"{step.refused_busy}{failed} | {step.cpu_ms_per_case:.2f} ms | {step.rss_mb:.0f} MB |"
            )
    lines += ["", "Set-ups:", ""]
    lines += [f"- **{run.name}**: {run.description}; API resident memory {run.rss_before_mb:.0f} MB after warming "
              f"up, peak {run.peak_rss_mb:.0f} MB." for run in runs]
    lines += ["", *verdicts(runs), RESULTS_END]
    return "\n".join(lines)


def _best(run: SetupRun) -> float:
    return max((step.sustained for step in run.steps), default=0.0)


def verdicts(runs: list[SetupRun]) -> list[str]:
    """The targets, judged on this run's figures."""
    by_name = {run.name: run for run in runs}
    found = []
    if "floor" in by_name and "api" in by_name:
        ratio = _best(by_name["api"]) / _best(by_name["floor"])
        found.append(f"- One `broker api` process / floor, best sustained rate: **{ratio:.0%}** "
                     f"({_best(by_name['api']):,.0f}/s against {_best(by_name['floor']):,.0f}/s; target at least "
                     f"50%: {'met' if ratio >= 0.5 else 'NOT met'}).")
    if "api" in by_name:
        at_100 = [step for step in by_name["api"].steps if step.offered == 100]
        if at_100:
            p99 = percentile(at_100[0].to_202, 0.99)
            found.append(f"- `broker api` at 100/s, p99 to the 202: **{p99 * 1000:.0f} ms** (target under 50 ms: "
                         f"{'met' if p99 < 0.05 else 'NOT met'}).")
    if "embedded" in by_name:
        at_300 = [step for step in by_name["embedded"].steps if step.offered == 300]
        if at_300:
            kept = at_300[0].sustained >= 0.97 * 300 and not at_300[0].undelivered
            found.append(f"- Embedded at 300/s offered: **{at_300[0].sustained:.0f}/s** sustained to the target "
                         f"(target 300/s: {'met' if kept else 'NOT met'}).")
    for run in runs:
        if run.steps:
            growth = run.steps[-1].rss_mb - run.rss_before_mb
            found.append(f"- {run.name}: API memory {run.rss_before_mb:.0f} MB before the load, "
                         f"{run.steps[-1].rss_mb:.0f} MB after its last step ({growth:+.0f} MB).")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--rates", default="20,100,300,1000,2000", help="offered rates, cases a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate is offered (default 10)")
    parser.add_argument("--connections", type=int, default=1024,
                        help="keep-alive connections at most (default 1024, past the API's in-flight bound of 256)")
    parser.add_argument("--amqp-url", default=os.environ.get("CASEBRIDGE_TEST_AMQP_URL",
                                                             "amqp://guest:guest@127.0.0.1:5672//"))
    parser.add_argument("--postgres-url", default=os.environ.get("CASEBRIDGE_TEST_POSTGRES_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"),
                        help="markdown file whose results section is replaced; '-' prints only")
    args = parser.parse_args()
    names = [name.strip() for name in args.setups.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SETUPS))
    if unknown:
        parser.error(f"unknown set-up(s) {', '.join(unknown)}; choose from {', '.join(SETUPS)}")
    rates = [float(rate) for rate in args.rates.split(",")]

    receiver = Receiver(track=TRACK)
    runs = []
    try:
        for name in names:
            print(f"{name}: {SETUPS[name][0]}", flush=True)
            runs.append(run_setup(name, args.postgres_url, args.amqp_url, receiver, rates, args.seconds,
                                  args.connections))
    finally:
        receiver.close()
    text = report(runs, args.postgres_url, args.amqp_url, args.seconds, args.connections)
    print(text)
    if args.output != "-":
        write_section(Path(args.output), text, RESULTS_START, RESULTS_END)


if __name__ == "__main__":
    main()
