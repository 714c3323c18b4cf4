"""The alert service: consume `incidents`, store dispatch tasks, deliver them, serve the API.

Order of work per message: route → store the missing tasks (one SQLite transaction) → commit
the Kafka offset → deliver in the background. A crash after the commit loses nothing: tasks
not yet delivered are picked up from the store at startup and by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from alerts import metrics
from alerts.api import create_app
from alerts.delivery import deliver
from alerts.routing import Routing, load_routing, route
from alerts.store import Task, TaskStore
from config.settings import Settings
from config.topics import INCIDENTS_TOPIC
from rules.models import IncidentEvent

log = logging.getLogger(__name__)
MAX_CONCURRENT_DELIVERIES = 32


def store_incident(raw: bytes | None, *, routing: Routing, store: TaskStore) -> list[Task]:
    """Decode, route and store one incident message; returns the tasks it newly created.

    Unreadable messages are logged, counted and skipped (returns []): a poison message must
    not stop the dispatch of every incident behind it.
    """
    if not raw:
        metrics.BAD_INCIDENTS.labels("empty").inc()
        log.warning("skipped an empty incident message")
        return []
    try:
        incident = IncidentEvent.model_validate_json(raw)
    except ValidationError as exc:
        reason = "json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "schema"
        metrics.BAD_INCIDENTS.labels(reason).inc()
        log.warning("skipped a bad incident message (%s): %s; raw=%.200r", reason, exc.errors()[0]["msg"], raw)
        return []
    departments = route(incident, routing)
    if not departments:
        metrics.UNROUTED.inc()
        log.warning(
            "incident %s (%s, region %s) matched no route", incident.incident_id, incident.sector, incident.region
        )
    # A closed incident still gets its tasks: it happened, and it must be reported (docs/standards.md §10).
    new = store.record_incident(incident, departments, routing.ack_minutes_for(incident.severity))
    metrics.INCIDENTS.inc()
    for task in new:
        metrics.TASKS_CREATED.labels(task.department, task.severity).inc()
    return new


async def process_incident(
    raw: bytes, *, routing: Routing, store: TaskStore, client: httpx.AsyncClient, settings: Settings
) -> list[Task]:
    """Store the tasks one incident message needs and deliver them; returns the new tasks as delivered.

    A replay of a message already processed creates and delivers nothing and returns [].
    """
    new = store_incident(raw, routing=routing, store=store)
    delivered = await asyncio.gather(
        *(deliver(t, routing=routing, client=client, store=store, settings=settings) for t in new)
    )
    return list(delivered)


@dataclass
class Deliveries:
    """Background deliveries: at most one at a time per task, a bounded number in all."""

    routing: Routing
    store: TaskStore
    client: httpx.AsyncClient
    settings: Settings
    running: dict[str, asyncio.Task] = field(default_factory=dict)
    limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES))

    def start(self, task: Task, attempts: int | None = None) -> None:
        """Deliver a task in the background unless it is already being delivered."""
        if task.task_id in self.running:
            return
        job = asyncio.create_task(self._run(task, attempts), name=f"deliver-{task.task_id}")
        self.running[task.task_id] = job
        job.add_done_callback(lambda _: self.running.pop(task.task_id, None))

    async def _run(self, task: Task, attempts: int | None) -> None:
        async with self.limit:
            try:
                await deliver(
                    task,
                    routing=self.routing,
                    client=self.client,
                    store=self.store,
                    settings=self.settings,
                    attempts=attempts,
                )
            except Exception:
                # The task stays pending/failed in the store, so the next sweep tries again.
                log.exception("delivery of %s crashed", task.task_id)

    async def close(self) -> None:
        """Stop deliveries in progress; their tasks stay in the store for the next start."""
        jobs = list(self.running.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def redeliver_forever(deliveries: Deliveries, store: TaskStore, interval_s: float) -> None:
    """At once and then every interval: deliver stored tasks that are not delivered yet.

    Pending tasks (stored, then the process stopped) get the full retry ladder; failed ones
    one attempt per sweep, so a department that is down for hours gets a steady, bounded retry.
    """
    while True:
        for task in store.undelivered():
            deliveries.start(task, attempts=1 if task.status == "failed" else None)
        await asyncio.sleep(interval_s)


def incident_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The `incidents` consumer: manual commits after the tasks are stored, from the earliest offset."""
    session_ms = int(settings.session_timeout_s * 1000)
    return AIOKafkaConsumer(
        settings.topic(INCIDENTS_TOPIC),
        bootstrap_servers=settings.bootstrap,
        group_id=settings.alerts_group,
        client_id="safewatch-alerts",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_wait_ms,
        # A short session keeps the embedded broker's slow group join (about half of it) short.
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(100, session_ms // 3),
    )


async def consume_forever(settings: Settings, routing: Routing, store: TaskStore, deliveries: Deliveries) -> None:
    """Read incidents until cancelled; commit each partition's offset once its tasks are stored."""
    consumer = incident_consumer(settings)
    await _start_consumer(consumer, settings)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for tp, messages in batches.items():
                for message in messages:
                    for task in await _store_until_done(message.value, routing, store):
                        deliveries.start(task)
                await _commit(consumer, tp, messages[-1].offset + 1)
    finally:
        await consumer.stop()


async def serve(settings: Settings) -> None:
    """Run the consumer, the delivery sweep and the HTTP API in this loop until cancelled or SIGTERM."""
    routing = load_routing(settings.routing, alerts_api=settings.alerts_api)
    store = TaskStore(settings.alerts_db_path)
    client = httpx.AsyncClient(timeout=settings.delivery_timeout_s)
    deliveries = Deliveries(routing=routing, store=store, client=client, settings=settings)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, store),
            host=settings.alerts_host,
            port=settings.alerts_port,
            access_log=False,
            log_config=None,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    restore_signals = _handle_signals(lambda: loop.call_soon_threadsafe(stop.set))
    api = asyncio.create_task(_run_server(server, settings), name="alerts-api")
    jobs: list[asyncio.Task] = []
    try:
        await _until_listening(server, api)
        log.info(
            "alert service: API on %s, %d departments, %d routes, tasks in %s",
            settings.alerts_api,
            len(routing.departments),
            len(routing.routes),
            store.path,
        )
        jobs.append(asyncio.create_task(consume_forever(settings, routing, store, deliveries), name="alerts-consumer"))
        jobs.append(
            asyncio.create_task(redeliver_forever(deliveries, store, settings.alerts_redeliver_s), name="alerts-sweep")
        )
        jobs.append(asyncio.create_task(stop.wait(), name="alerts-stop"))
        done, _ = await asyncio.wait([api, *jobs], return_when=asyncio.FIRST_COMPLETED)
        for job in done:
            if not job.cancelled():
                exc = job.exception()
                if exc is not None:
                    raise exc
    finally:
        # Consumer and deliveries first, while the API (maybe their demo inbox) still answers;
        # undelivered tasks stay in the store for the next start.
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await deliveries.close()
        server.should_exit = True  # uvicorn's graceful stop
        await asyncio.gather(api, return_exceptions=True)
        await client.aclose()
        store.close()
        restore_signals()
        log.info("alert service stopped")


async def _start_consumer(consumer: AIOKafkaConsumer, settings: Settings) -> None:
    # The service may start before the broker (stack up order, a broker restart): keep trying.
    while True:
        try:
            await consumer.start()
            return
        except KafkaError as exc:
            log.warning("broker %s not reachable (%s); retrying in 2 s", settings.bootstrap, exc)
            await consumer.stop()
            await asyncio.sleep(2)


async def _store_until_done(raw: bytes | None, routing: Routing, store: TaskStore) -> list[Task]:
    # A database error is not the message's fault: retry rather than skip it, and keep the
    # offset uncommitted meanwhile.
    while True:
        try:
            return store_incident(raw, routing=routing, store=store)
        except sqlite3.Error as exc:
            log.error("cannot store tasks in %s (%s); retrying in 1 s", store.path, exc)
            await asyncio.sleep(1)


async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    try:
        await consumer.commit({tp: offset})
    except KafkaError as exc:
        # Typically a rebalance: the next owner re-reads these messages, and the store's
        # UNIQUE(incident_id, department) turns them into no-ops.
        log.warning("commit of %s at %d failed: %s", tp, offset, exc)


async def _run_server(server: uvicorn.Server, settings: Settings) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits the process when it cannot bind; make that an ordinary error here.
        raise RuntimeError(f"alert API could not listen on {settings.alerts_api} (see the log above)") from exc


async def _until_listening(server: uvicorn.Server, api: asyncio.Task) -> None:
    while not server.started:
        if api.done():
            api.result()  # raises the reason it stopped
            raise RuntimeError("alert API stopped before it started listening")
        await asyncio.sleep(0.02)


def _handle_signals(on_signal: Callable[[], object]) -> Callable[[], None]:
    """Call `on_signal` on SIGTERM/SIGINT (main thread only); returns a function restoring the old handlers.

    uvicorn installs its own handlers while it runs and re-raises the signal after its graceful
    shutdown; with ours underneath, that re-raise stops the consumer instead of killing the process.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: on_signal()) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
