"""Compose a broker process from settings: store, intake, relay, consumers, scheduler and API."""

from __future__ import annotations

import threading
from typing import Any

import structlog
from fastapi import FastAPI

from broker.api.app import ApiContext, create_app
from broker.config.loader import Configuration, load_configuration
from broker.delivery.circuit import CircuitBreaker
from broker.delivery.liveness import Heartbeat
from broker.delivery.worker import DeliveryWorker
from broker.errors import ConfigError, SchemaOutOfDate
from broker.failures.poison import PoisonRecorder
from broker.intake import held
from broker.intake.batcher import IntakeBatcher
from broker.intake.routing import Router
from broker.intake.transaction import Intake
from broker.operations.endpoint import serve_operations
from broker.operations.health import Health
from broker.operations.metrics import StoreCollector, install_store_collector, store_metrics
from broker.plugins.contract import Adapter
from broker.plugins.registry import build_adapter
from broker.scheduling.context import JobContext
from broker.scheduling.jobs import JOB_OPTIONS, JOBS
from broker.scheduling.scheduler import Scheduler
from broker.scheduling.schedules import load_schedules
from broker.settings import Settings
from broker.store.database import Store, is_store_unreachable, schema_is_current
from broker.store.deliveries import requeue_open_deliveries
from broker.store.workers import new_worker_id
from broker.transport.consumer import QueueConsumer
from broker.transport.fabric import Fabric
from broker.transport.inbound import InboundHandler
from broker.transport.inspect import queue_depths
from broker.transport.relay import OutboxRelay

log = structlog.get_logger("casebridge.runtime")


class Broker:
    """Everything one process runs. ``broker run`` starts all of it; ``api``/``worker``/``scheduler`` a part."""

    def __init__(self, settings: Settings, configuration: Configuration | None = None,
                 *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.configuration = configuration or load_configuration(settings.mappings_dir)
        self.store = Store(settings.database_url)
        self.intake = Intake(self.store, self.configuration, hold_seconds=settings.hold_unknown_case_seconds)
        self.router = Router(self.configuration)
        self.stop_event = stop or threading.Event()
        self.fabric = Fabric(settings, stop=self.stop_event, is_outage=is_store_unreachable)
        self.relay: OutboxRelay | None = None
        self.health = Health(self.store)
        self.batcher: IntakeBatcher | None = None
        self.operations_endpoint: Any = None
        install_store_collector(StoreCollector(store_metrics(
            self.store, sorted(self.configuration.targets),
            self._queue_depths if settings.uses_rabbitmq else None)))
        self.adapters: dict[str, Adapter[Any]] = {}
        self.delivery_workers: list[DeliveryWorker] = []
        self.scheduler: Scheduler | None = None
        self.worker_id = new_worker_id()
        self.heartbeat: Heartbeat | None = None
        self.replay_runner: threading.Thread | None = None

    @property
    def consumers(self) -> list[QueueConsumer]:
        return self.fabric.consumers

    @property
    def topology(self) -> Any:
        """The exchange and queue names, for tools that look at RabbitMQ (they belong to the transport)."""
        return self.fabric.topology

    def migrate(self) -> None:
        self.store.migrate()

    def require_schema(self) -> None:
        """Refuse to start on a store whose schema is missing or out of date."""
        if not schema_is_current(self.store.engine):
            raise SchemaOutOfDate("the store's schema is not up to date: run `broker db upgrade` first")

    def start_scheduler(self) -> Scheduler:
        schedules = load_schedules(self.settings.schedules_dir, known_jobs=set(JOBS), option_models=JOB_OPTIONS)
        context = JobContext(self.store, self.configuration, self.intake, settings=self.settings)
        self.scheduler = Scheduler(context, schedules, stop=self.stop_event, after_run=self.wake_relay)
        self.scheduler.start()
        return self.scheduler

    def start_relay(self) -> OutboxRelay:
        self.relay = self.fabric.relay(self.store, self.configuration.targets,
                                       every_poll=lambda: held.release_and_expire(self.store, self.intake.take_in_held))
        relay = self.relay
        self.health.checks["relay"] = lambda: (
            f"the outbox relay has not gone round for {relay.stuck_for():.0f} s more than it should"
            if relay.stuck_for() else None)
        if self.settings.uses_rabbitmq:
            self.health.checks["rabbitmq"] = lambda: None if relay.ready.is_set() else \
                "the outbox relay is not connected to RabbitMQ (it is retrying)"
        self.intake.handoff = relay  # intake's pointers go straight to it as they commit
        self.relay.start()
        return self.relay

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    def after_intake(self) -> None:
        """After an intake commit: its pointers were handed to this process's relay, if it has one; otherwise
        the relay (of another process) is told there is something to take."""
        if self.intake.handoff is None:
            self.wake_relay()

    def start_workers(self) -> list[QueueConsumer]:
        """The AMQP intake consumer and one delivery consumer per real-time target, and the workers' heartbeat."""
        self.heartbeat = Heartbeat(self.store, self.worker_id, stop=self.stop_event)
        self.heartbeat.beat_once()  # before any claim is made in this worker's name
        self.heartbeat.start()
        if not self.settings.uses_rabbitmq:
            # The in-process queues started empty: what was queued or in flight when the last process stopped
            # is queued again (RabbitMQ keeps its queues, and hands back what a stopped worker had not acked).
            requeued = requeue_open_deliveries(self.store)
            if requeued:
                log.info("deliveries.requeued_at_start", count=requeued)
                self.wake_relay()
        inbound = InboundHandler(
            self.intake, self.fabric.reply_connection, self.after_intake,
            max_body_bytes=self.settings.max_body_bytes, namespace=self.fabric.namespace,
            publishers=self.settings.amqp_publishers, own_account=self.settings.amqp_user,
            bind_publishers=self.settings.uses_rabbitmq,
        )
        poison = PoisonRecorder(self.store)
        self.fabric.consume_intake(inbound.handle_batch, poison)
        self.fabric.consume_dead_letters(poison)
        self.health.checks["consumers"] = lambda: (
            f"not consuming: {', '.join(sorted(c.name for c in self.consumers if not c.ready.is_set()))}"
            if not all(consumer.ready.is_set() for consumer in self.consumers) else None)
        for target in sorted(self.router.realtime_targets()):
            spec = self.configuration.targets[target]
            adapter = build_adapter(spec.definition.adapter, target, spec.settings, spec.mapping)
            self.adapters[target] = adapter
            breaker = CircuitBreaker(target, spec.definition.circuit, self.store)
            worker = DeliveryWorker(
                self.store, {target: adapter},
                policies={target: spec.definition.retry}, breakers={target: breaker},
                unconfirmed={target: spec.definition.on_unconfirmed},
                concurrency={target: spec.definition.concurrency},
                quick_retries=self.settings.quick_retries, worker_id=self.worker_id,
            )
            self.delivery_workers.append(worker)
            self.fabric.consume_deliveries(target, worker.handle_batch, poison,
                                           pause_for=breaker.seconds_until_probe)
        return self.consumers

    def api_app(self) -> FastAPI:
        if self.settings.api_group_commit_ms > 0 and self.batcher is None:
            self.batcher = IntakeBatcher(self.intake, stop=self.stop_event, after_commit=self.after_intake,
                                         linger_seconds=self.settings.api_group_commit_ms / 1000,
                                         committers=1)
            self.batcher.start()
        app = create_app(ApiContext(
            store=self.store, intake=self.intake, after_accept=self.after_intake,
            max_body_bytes=self.settings.max_body_bytes, public_base_url=self.settings.api_base_url,
            rate_per_second=self.settings.api_rate_per_second, rate_burst=self.settings.api_rate_burst,
            health=self.health, batcher=self.batcher, max_in_flight=self.settings.api_max_in_flight,
            fast_intake=self.settings.api_fast_intake,
        ))
        from broker.console.app import install_console
        from broker.console.security import ConsoleContext

        try:
            schedules = load_schedules(self.settings.schedules_dir, known_jobs=set(JOBS))
        except ConfigError:  # the API serves without them; `broker check` and the scheduler report the problems
            schedules = []
        self.replay_runner = install_console(app, ConsoleContext(
            store=self.store, intake=self.intake,
            targets=sorted(self.configuration.targets), schedules=schedules,
            secure_cookies=self.settings.console_secure_cookies, wake_relay=self.wake_relay,
            sign_in_failures=self.settings.console_sign_in_failures,
            sign_in_window_seconds=self.settings.console_sign_in_window_seconds,
            store_size_limit_bytes=self.settings.store_size_limit_bytes,
        ), stop=self.stop_event)
        return app

    def _queue_depths(self) -> dict[str, int]:
        """Pointers waiting in each target's delivery queue."""
        depths = queue_depths(self.settings, sorted(self.configuration.targets))
        return {target: messages for target, (messages, _consumers) in depths.items() if target}

    def serve_operations(self) -> None:
        """``/metrics`` and the health checks on ``metrics_port``, for a process without the API (if set)."""
        if self.settings.metrics_port is None:
            return
        self.operations_endpoint = serve_operations(self.settings.http_host, self.settings.metrics_port, self.health)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once the relay and every consumer are connected."""
        waiters = [self.relay.ready] if self.relay else []
        waiters += [consumer.ready for consumer in self.consumers]
        return all(event.wait(timeout) for event in waiters)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking work, let in-flight messages finish (unfinished ones stay queued), release everything."""
        self.stop_event.set()
        if self.batcher is not None:  # what was taken in is committed (and answered) before the relay stops
            self.batcher.join(timeout)
        threads: list[threading.Thread] = [*self.consumers]
        threads += [thread for thread in (self.relay, self.scheduler, self.replay_runner, self.heartbeat)
                    if thread is not None]
        for thread in threads:
            thread.join(timeout)
        for worker in self.delivery_workers:
            worker.close()
        if self.heartbeat is not None and not any(consumer.is_alive() for consumer in self.consumers):
            self.heartbeat.forget()  # nothing of ours is in flight any more
        if self.operations_endpoint is not None:
            self.operations_endpoint.shutdown()
            self.operations_endpoint.server_close()
        for adapter in self.adapters.values():
            adapter.close()
        self.store.dispose()
        log.info("broker.stopped")

