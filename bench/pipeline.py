"""Throughput and memory of the whole pipeline, against a raw AMQP hop measured in the same run.

The pipeline: N canonical ``case.created`` envelopes are published (persistent, confirmed) to the inbound exchange;
``broker worker`` processes take them in, record them in PostgreSQL with their audit trail, route them, relay them to
the target's delivery queue and deliver each to a local webhook receiver, recording the outcome.

The baseline: the same N messages on quorum queues with the same settings, moved by a bare aio-pika consumer that
publishes each one on to a second queue, waits for the publisher confirm, then acks — one hop, nothing else.

    .venv/bin/python bench/pipeline.py                 # 20,000 cases, results written to docs/benchmarks.md
    .venv/bin/python bench/pipeline.py --cases 2000 --output -    # a quick look, printed only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import aio_pika
import pika
import psycopg
from databases import fresh_database
from report import write_section

REPO = Path(__file__).resolve().parents[1]
BROKER = str(Path(sys.executable).with_name("broker"))
PREFETCH = 200
RESULTS_START = "<!-- pipeline results -->"
RESULTS_END = "<!-- end pipeline results -->"


@dataclass
class Result:
    cases: int
    workers: int
    baseline_rate: float
    pipeline_rate: float
    peak_worker_mb: float
    worker_cpu_ms_per_case: float
    receiver_cpu_ms_per_case: float

    @property
    def ratio(self) -> float:
        return self.pipeline_rate / self.baseline_rate


def envelope(number: int) -> bytes:
    """A realistic ~1 kB envelope, the shape a council CRM sends."""
    return json.dumps({
        "event_id": str(uuid.uuid4()),
        "event_type": "case.created",
        "schema_version": "1.0",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "crm",
        "case": {
            "case_id": f"BENCH-{number:07d}",
            "service_code": "highways.pothole",
            "channel": "web",
            "description": "Deep pothole in the nearside lane outside number 12, about 300 mm across",
            "location": {"easting": 530123.0, "northing": 180456.0, "postcode": "SW1A 1AA", "usrn": "8400123"},
            "reporter": {"kind": "person", "person": {"name": "Resident Name", "email": "resident@example.org",
                                                      "phone": "020 7946 0000"}},
            "wants_updates": True,
            "attributes": {"depth_mm": 80, "on_road": True, "hazard": "cyclists"},
        },
    }).encode()


def pika_parameters(url: str) -> pika.URLParameters:
    return pika.URLParameters(url[:-1] + "%2F" if url.endswith("//") else url)


def publish_confirmed(url: str, exchange: str, routing_key: str, bodies: list[bytes]) -> None:
    """Publish persistently with publisher confirms, as a CRM would (pika, an independent client)."""
    connection = pika.BlockingConnection(pika_parameters(url))
    user = urlparse(url).username or "guest"  # the account RabbitMQ checks user_id against
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(
                content_type="application/json", delivery_mode=2, user_id=user))
    finally:
        connection.close()


# --- baseline -----------------------------------------------------------------------------------------------------

async def raw_hop(url: str, bodies: list[bytes]) -> float:
    """Messages per second through consume -> publish(confirm) -> ack between two quorum queues."""
    names = [f"bench-raw-{uuid.uuid4().hex[:8]}-{side}" for side in ("in", "out")]
    connection = await aio_pika.connect_robust(url)
    try:
        setup = await connection.channel()
        queues = [await setup.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
                  for name in names]
        await asyncio.to_thread(publish_confirmed, url, "", names[0], bodies)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=PREFETCH)
        publish_channel = await connection.channel(publisher_confirms=True)
        source = await consume_channel.get_queue(names[0])
        done = asyncio.Event()
        handled = 0

        async def hop(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal handled
            await publish_channel.default_exchange.publish(
                aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 content_type="application/json"),
                routing_key=names[1],
            )
            await message.ack()
            handled += 1
            if handled == len(bodies):
                done.set()

        started = time.perf_counter()
        consumer_tag = await source.consume(hop)
        await done.wait()
        elapsed = time.perf_counter() - started
        await source.cancel(consumer_tag)
        for queue in queues:
            await queue.delete(if_unused=False, if_empty=False)
        return len(bodies) / elapsed
    finally:
        await connection.close()


# --- pipeline -----------------------------------------------------------------------------------------------------

class _ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: what the webhook adapter sends, and nothing more."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            if not head.startswith(b"post "):
                raise RuntimeError(f"the receiver takes POSTs only, got {head[:40]!r}")
            found = head.find(b"\r\ncontent-length:")
            if found < 0:
                raise RuntimeError("the receiver needs a Content-Length body")
            line_end = head.find(b"\r\n", found + 2)
            length = int(head[found + len(b"\r\ncontent-length:"):line_end if line_end >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            del self.buffer[:end + 4 + length]
            assert self.transport is not None
            self.transport.write(self.receiver.answer())


class Receiver:
    """The stand-in LOB system: answers every POST with 201 and a reference, counts what arrived.

    A bare asyncio protocol rather than ``http.server``: on a small machine the stand-in shares the cores with the
    broker, RabbitMQ and PostgreSQL, so it should take as little of them as a remote LOB system would.
    """

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(self.loop.create_server(
            lambda: _ReceiverProtocol(self), "127.0.0.1", 0, backlog=256))
        ready.set()
        self.loop.run_forever()

    def answer(self) -> bytes:
        """The response to one request (called on the receiver's own thread only)."""
        self.count += 1
        self.last_at = time.perf_counter()
        body = b'{"reference": "LOB-%d"}' % self.count
        return b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body), body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def write_mappings(directory: Path, receiver_url: str) -> None:
    directory.mkdir()
    (directory / "services.yaml").write_text((REPO / "mappings" / "services.yaml").read_text())
    (directory / "routes.yaml").write_text(
        "targets:\n  highways:\n    adapter: webhook\n    settings:\n"
        f"      url: {receiver_url}/highways\n"
        "routes:\n  - name: highways\n    services: [\"highways.*\"]\n    deliver:\n      - target: highways\n"
    )
    (directory / "highways.yaml").write_text("service_codes:\n  highways.pothole: POT\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def pipeline(amqp_url: str, postgres_url: str, bodies: list[bytes],
             workers: int) -> tuple[float, float, float, float]:
    """Messages per second from the inbound exchange to the webhook, the largest worker's peak RSS (MB), and the
    workers' CPU time per case (ms)."""
    receiver = Receiver()
    namespace = f"cbbench-{uuid.uuid4().hex[:8]}"
    with fresh_database(postgres_url) as database_url, tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_mappings(folder / "mappings", receiver.url)
        (folder / "schedules").mkdir()
        env = {key: value for key, value in os.environ.items() if not key.startswith("CASEBRIDGE_")}
        env.update({
            "CASEBRIDGE_DATABASE_URL": database_url, "CASEBRIDGE_AMQP_URL": amqp_url,
            "CASEBRIDGE_AMQP_NAMESPACE": namespace, "CASEBRIDGE_MAPPINGS_DIR": str(folder / "mappings"),
            "CASEBRIDGE_SCHEDULES_DIR": str(folder / "schedules"), "CASEBRIDGE_PREFETCH": str(PREFETCH),
            "CASEBRIDGE_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        })
        subprocess.run([BROKER, "db", "upgrade"], env=env, check=True, capture_output=True)
        # Declare the topology (and let the queues exist) before the CRM publishes: start and stop one worker.
        _run_workers(env, folder, 1, until=lambda: True)
        publish_confirmed(amqp_url, f"{namespace}.inbound", "case.created", bodies)
        receiver_cpu_before = time.process_time()  # this process, while the pipeline runs: the receiver
        started, peak, cpu = _run_workers(env, folder, workers, until=lambda: receiver.count >= len(bodies))
        receiver_cpu = time.process_time() - receiver_cpu_before
        elapsed = receiver.last_at - started
        _delete_namespace(amqp_url, namespace)
    receiver.close()
    return len(bodies) / elapsed, peak, cpu * 1000 / len(bodies), receiver_cpu * 1000 / len(bodies)


def _run_workers(env: dict[str, str], folder: Path, count: int, until: object) -> tuple[float, float, float]:
    """Start ``count`` workers and wait for ``until``; returns when they were consuming, their peak memory (MB)
    and the CPU seconds they used meanwhile."""
    assert callable(until)
    logs = [open(folder / f"worker-{n}.log", "wb") for n in range(count)]  # noqa: SIM115
    processes = [subprocess.Popen([BROKER, "worker"], env={**env, "CASEBRIDGE_LOG_LEVEL": "INFO"}, cwd=folder,
                                  stdout=log, stderr=subprocess.STDOUT) for log in logs]
    try:
        while not all(b"consumer.started" in (folder / f"worker-{n}.log").read_bytes() for n in range(count)):
            if any(process.poll() is not None for process in processes):
                raise RuntimeError((folder / "worker-0.log").read_text())
            time.sleep(0.01)
        started = time.perf_counter()
        cpu_before = sum(cpu_seconds(process.pid) for process in processes)
        while not until():
            if any(process.poll() is not None for process in processes):
                raise RuntimeError((folder / "worker-0.log").read_text())
            time.sleep(0.01)
        peak = max(peak_rss_mb(process.pid) for process in processes)
        cpu = sum(cpu_seconds(process.pid) for process in processes) - cpu_before
        return started, peak, cpu
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
        for log in logs:
            log.close()


def _delete_namespace(amqp_url: str, namespace: str) -> None:
    connection = pika.BlockingConnection(pika_parameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in (f"{namespace}.intake", f"{namespace}.deliver.highways"):
            channel.queue_delete(queue)
        for exchange in (f"{namespace}.inbound", f"{namespace}.deliver"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


# --- report -------------------------------------------------------------------------------------------------------

def rabbitmq_version(url: str) -> str:
    connection = pika.BlockingConnection(pika_parameters(url))
    try:
        version = connection._impl.server_properties.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        connection.close()


def postgres_version(url: str) -> str:
    with psycopg.connect(url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"


def report(result: Result, amqp_url: str, postgres_url: str) -> str:
    verdict_rate = "met" if result.ratio >= 0.5 else "NOT met"
    verdict_memory = "met" if result.peak_worker_mb < 200 else "NOT met"
    return "\n".join([
        RESULTS_START,
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, RabbitMQ {rabbitmq_version(amqp_url)} and PostgreSQL "
        f"{postgres_version(postgres_url)} on the same machine; {result.cases:,} cases, "
        f"{result.workers} `broker worker` process(es), prefetch {PREFETCH}.",
        "",
        "| path | msg/s |",
        "| --- | ---: |",
        f"| raw hop: aio-pika consume -> publish (confirm) -> ack, quorum queues | {result.baseline_rate:,.0f} |",
        f"| Casebridge: AMQP intake -> PostgreSQL -> route -> deliver queue -> webhook -> recorded | "
        f"{result.pipeline_rate:,.0f} |",
        "",
        f"- Pipeline / raw hop: **{result.ratio:.0%}** (target at least 50%: {verdict_rate}).",
        f"- Peak resident memory of a worker process: **{result.peak_worker_mb:.0f} MB** (target under 200 MB: "
        f"{verdict_memory}).",
        f"- Worker CPU time per case (all threads of all workers): **{result.worker_cpu_ms_per_case:.2f} ms**; "
        f"the stand-in webhook receiver's: {result.receiver_cpu_ms_per_case:.2f} ms.",
        RESULTS_END,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20_000, help="cases to push through (default 20,000)")
    parser.add_argument("--workers", type=int, default=2, help="`broker worker` processes (default 2)")
    parser.add_argument("--amqp-url", default=os.environ.get("CASEBRIDGE_TEST_AMQP_URL",
                                                             "amqp://guest:guest@127.0.0.1:5672//"))
    parser.add_argument("--postgres-url", default=os.environ.get("CASEBRIDGE_TEST_POSTGRES_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"),
                        help="markdown file whose results section is replaced; '-' prints only")
    args = parser.parse_args()

    bodies = [envelope(n) for n in range(args.cases)]
    print(f"raw hop over {args.cases:,} messages ...", flush=True)
    baseline = asyncio.run(raw_hop(args.amqp_url, bodies))
    print(f"  {baseline:,.0f} msg/s", flush=True)
    print(f"pipeline over {args.cases:,} cases with {args.workers} worker(s) ...", flush=True)
    rate, peak, cpu_per_case, receiver_cpu = pipeline(args.amqp_url, args.postgres_url, bodies, args.workers)
    print(f"  {rate:,.0f} msg/s, peak worker memory {peak:.0f} MB, {cpu_per_case:.2f} ms worker CPU per case, "
          f"{receiver_cpu:.2f} ms receiver CPU per case",
          flush=True)
    text = report(Result(args.cases, args.workers, baseline, rate, peak, cpu_per_case, receiver_cpu), args.amqp_url,
                  args.postgres_url)
    print(text)
    if args.output != "-":
        write_section(Path(args.output), text, RESULTS_START, RESULTS_END)


if __name__ == "__main__":
    main()
