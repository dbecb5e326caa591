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
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import aio_pika
import pika
from cases import envelope
from databases import fresh_database
from procs import cpu_seconds, peak_rss_mb
from receiver import Receiver, write_webhook_mappings
from report import write_section
from services import delete_namespace, pika_parameters, postgres_version, rabbitmq_version

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

def pipeline(amqp_url: str, postgres_url: str, bodies: list[bytes],
             workers: int) -> tuple[float, float, float, float]:
    """Messages per second from the inbound exchange to the webhook, the largest worker's peak RSS (MB), and the
    workers' CPU time per case (ms)."""
    receiver = Receiver()
    namespace = f"cbbench-{uuid.uuid4().hex[:8]}"
    with fresh_database(postgres_url) as database_url, tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_webhook_mappings(folder / "mappings", receiver.url)
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
        delete_namespace(amqp_url, namespace)
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
        started = time.monotonic()  # the receiver stamps with the same clock
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


# --- report -------------------------------------------------------------------------------------------------------

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

    bodies = [envelope(f"BENCH-{n:07d}") for n in range(args.cases)]
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
