"""The alert service: consume `incidents` and `notices`, store dispatch tasks, send their
notifications, escalate what nobody acknowledges, serve the API.

Order of work per message: route → store the missing tasks and their first notifications
(one SQLite transaction) → commit the Kafka offset → send from the outbox in the background.
A crash after the commit loses nothing: the outbox is read at startup, after every change
and by a periodic sweep; escalation deadlines are in the store, read by a 1 s timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from alerts import metrics, store_process
from alerts.api import create_app
from alerts.delivery import deliver, deliver_webhooks
from alerts.dialect import DB_ERRORS
from alerts.escalation import escalate_forever
from alerts.notices import as_item
from alerts.routing import LiveRouting, Routing, all_routes, facts_of, route_matches
from alerts.store import Notification, Routed, Task, TaskStore
from config.heap import freeze_startup_heap
from config.settings import Settings
from config.topics import INCIDENTS_TOPIC, NOTICES_TOPIC
from rules.models import IncidentEvent, NoticeEvent
from sensors.registry import RegistryError, load_registry

log = logging.getLogger(__name__)
MAX_CONCURRENT_DELIVERIES = 32
OUTBOX_READ = 10_000  # outbox rows read at once
WEBHOOK_BATCH = 500  # first webhook attempts logged (and their outcomes) per store transaction


def store_incident(
    raw: bytes | None, *, routing: Routing, store: TaskStore, classes: Mapping[str, str] | None = None
) -> list[Task]:
    """Decode, route and store one incident message; returns the tasks it newly created.

    Unreadable messages are logged, counted and skipped (returns []): a poison message must
    not stop the dispatch of every incident behind it.
    """
    return store_incidents([raw], routing=routing, store=store, classes=classes)


def store_incidents(
    raws: list[bytes | None], *, routing: Routing, store: TaskStore, classes: Mapping[str, str] | None = None
) -> list[Task]:
    """`store_incident` for a batch of messages, in order, in one store transaction (one commit
    per fetch instead of one per incident); returns the tasks they newly created."""
    batch = [routed for raw in raws if (routed := route_incident(raw, routing, classes)) is not None]
    new = store.record_incidents(batch) if batch else []
    metrics.INCIDENTS.inc(len(batch))
    for task in new:
        metrics.TASKS_CREATED.labels(task.department, task.severity).inc()
    return new


def store_messages(
    messages: list[tuple[bool, bytes | None]],
    *,
    routing: Routing,
    store: TaskStore,
    classes: Mapping[str, str] | None = None,
) -> list[Task]:
    """`store_incidents` for a fetch of both topics: (is a notice, raw) pairs, in order, in one transaction."""
    batch = []
    for is_notice, raw in messages:
        routed = route_notice(raw, routing, classes) if is_notice else route_incident(raw, routing, classes)
        if routed is not None:
            batch.append(routed)
            (metrics.NOTICES if is_notice else metrics.INCIDENTS).inc()
    new = store.record_incidents(batch) if batch else []
    for task in new:
        metrics.TASKS_CREATED.labels(task.department, task.severity).inc()
    return new


def route_notice(raw: bytes | None, routing: Routing, classes: Mapping[str, str] | None = None) -> Routed | None:
    """Decode one maintenance notice and route it as an item of kind `maintenance`; None when unreadable."""
    try:
        notice = NoticeEvent.model_validate_json(raw or b"")
    except ValidationError as exc:
        metrics.BAD_INCIDENTS.labels("notice").inc()
        log.warning("skipped a bad notice message: %s; raw=%.200r", exc.errors()[0]["msg"], raw)
        return None
    routed = _routed(as_item(notice), routing, classes)
    return routed._replace(close_tasks=notice.status == "closed")


def route_incident(raw: bytes | None, routing: Routing, classes: Mapping[str, str] | None = None) -> Routed | None:
    """Decode one incident message and route it; None (logged and counted) when it is unreadable."""
    if not raw:
        metrics.BAD_INCIDENTS.labels("empty").inc()
        log.warning("skipped an empty incident message")
        return None
    try:
        incident = IncidentEvent.model_validate_json(raw)
    except ValidationError as exc:
        reason = "json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "schema"
        metrics.BAD_INCIDENTS.labels(reason).inc()
        log.warning("skipped a bad incident message (%s): %s; raw=%.200r", reason, exc.errors()[0]["msg"], raw)
        return None
    return _routed(incident, routing, classes)


def _routed(incident: IncidentEvent, routing: Routing, classes: Mapping[str, str] | None) -> Routed:
    matches = route_matches(facts_of(incident, (classes or {}).get(incident.enterprise_id)), routing)
    if not matches:
        metrics.UNROUTED.inc()
        log.warning(
            "incident %s (%s, region %s) matched no route", incident.incident_id, incident.sector, incident.region
        )
    # A closed incident still gets its tasks: it happened, and it must be reported (docs/standards.md §10).
    return Routed(
        incident,
        [m.department for m in matches],
        {m.department: getattr(m.ack_minutes, incident.severity) for m in matches},
        {m.department: m.send_resolved for m in matches},
    )


async def process_incident(
    raw: bytes, *, routing: Routing, store: TaskStore, client: httpx.AsyncClient, settings: Settings
) -> list[Task]:
    """Store the tasks one incident message needs (and its revision of existing tasks) and send
    what that queued; returns the new tasks as they are after sending. A replay of a message
    already processed sends nothing and returns []."""
    new = await asyncio.to_thread(store_incident, raw, routing=routing, store=store)
    queued = await asyncio.to_thread(store.unsent, include_failed=False)  # new tasks and revisions
    await asyncio.gather(*(deliver(n, routing=routing, client=client, store=store, settings=settings) for n in queued))
    return [t for t in [await asyncio.to_thread(store.get_task, t.task_id) for t in new] if t is not None]


@dataclass
class Deliveries:
    """Background sends of outbox notifications: at most one at a time per notification, a
    bounded number in all. First webhook attempts go in batches (`deliver_webhooks`: one store
    transaction before the POSTs, one after); everything else, and every retry, one by one."""

    routing: Routing
    store: TaskStore
    client: httpx.AsyncClient
    settings: Settings
    running: dict[int, asyncio.Task] = field(default_factory=dict)
    limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES))
    session: aiohttp.ClientSession | None = None  # the batches' client, made on first use (needs the loop)

    def start_many(self, notifications: list[Notification]) -> None:
        """Send what the outbox gave that is not already being sent: pending webhook messages in
        batches, the rest (other channels, failed ones: one attempt each) one by one."""
        batch = []
        for n in notifications:
            if n.id in self.running:
                continue
            department = self.routing.departments.get(n.department)
            if n.status == "pending" and n.channel == "webhook" and department is not None and department.webhook:
                batch.append(n)
            else:
                self.start(n, attempts=1 if n.status == "failed" else None)
        for i in range(0, len(batch), WEBHOOK_BATCH):
            chunk = batch[i : i + WEBHOOK_BATCH]
            job = asyncio.create_task(self._run_batch(chunk), name=f"deliver-batch-{chunk[0].key}")
            for n in chunk:
                self.running[n.id] = job
            job.add_done_callback(functools.partial(self._forget, [n.id for n in chunk]))

    def _forget(self, ids: list[int], job: asyncio.Task) -> None:
        for i in ids:
            if self.running.get(i) is job:  # a retry may have taken the id over meanwhile
                del self.running[i]

    async def _run_batch(self, notifications: list[Notification]) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONCURRENT_DELIVERIES))
        try:
            retry = await deliver_webhooks(
                notifications,
                routing=self.routing,
                session=self.session,
                store=self.store,
                settings=self.settings,
                limit=self.limit,
            )
        except Exception:
            # Left pending in the outbox (attempts logged stay on record), so the next sweep tries again.
            log.exception("a batch of %d deliveries crashed", len(notifications))
            return
        for n in retry:
            # The rest of the retry policy, one by one, after its first wait.
            self.running.pop(n.id, None)
            self.start(n, attempts=self.settings.delivery_retries, delay_s=self.settings.delivery_backoff_s)

    def start(self, notification: Notification, attempts: int | None = None, delay_s: float = 0.0) -> None:
        """Send a notification in the background unless it is already being sent."""
        if notification.id in self.running:
            return
        job = asyncio.create_task(self._run(notification, attempts, delay_s), name=f"deliver-{notification.key}")
        self.running[notification.id] = job
        job.add_done_callback(lambda done: self._forget([notification.id], done))

    async def _run(self, notification: Notification, attempts: int | None, delay_s: float = 0.0) -> None:
        await asyncio.sleep(delay_s)
        async with self.limit:
            try:
                await deliver(
                    notification,
                    routing=self.routing,
                    client=self.client,
                    store=self.store,
                    settings=self.settings,
                    attempts=attempts,
                )
            except Exception:
                # The notification stays pending/failed in the outbox, so the next sweep tries again.
                log.exception("delivery of %s crashed", notification.key)

    async def close(self) -> None:
        """Stop sends in progress; their notifications stay in the outbox for the next start."""
        jobs = list(self.running.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if self.session is not None:
            await self.session.close()


async def pump_outbox(deliveries: Deliveries, store: TaskStore, kick: asyncio.Event, sweep_s: float) -> None:
    """Send what the outbox holds: pending notifications whenever `kick` is set, and at once and
    then every `sweep_s` also the failed ones, one attempt each, so a department that is down for
    hours gets a steady, bounded retry."""
    loop = asyncio.get_running_loop()
    next_sweep = loop.time()
    seen = 0  # the newest outbox row started: a kick reads only what was queued after it
    while True:
        kick.clear()  # before reading the outbox, so a kick during the read is not lost
        sweep = loop.time() >= next_sweep
        # Outbox ids grow in commit order (one writer at a time), so nothing queued is skipped;
        # a row left pending by a crashed send is the sweep's, which reads the whole outbox.
        after = 0 if sweep else seen
        found = await asyncio.to_thread(store.unsent, include_failed=sweep, limit=OUTBOX_READ, after=after)
        deliveries.start_many(found)
        seen = max([seen, *(n.id for n in found)])
        if len(found) >= OUTBOX_READ:
            kick.set()  # more than one read holds: go on at once
        if sweep:
            next_sweep = loop.time() + sweep_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(kick.wait(), timeout=max(0.0, next_sweep - loop.time()))


async def reload_forever(live: LiveRouting, deliveries: Deliveries, store: TaskStore, interval_s: float) -> None:
    """Every interval: swap in the routing file if it changed and is valid (checked off the loop)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            if await asyncio.to_thread(live.reload_if_changed):
                deliveries.routing = live.current
                store.inhibit_rules = live.current.inhibit_rules
        except Exception:
            log.exception("routing reload failed; the old routing stays")


def supervision_classes(settings: Settings) -> dict[str, str]:
    """Each enterprise's supervision class from the registry, for routes that match on it."""
    try:
        registry = load_registry(settings.registry)
    except (RegistryError, OSError) as exc:
        # Routing still works without it; only supervision_classes matchers go unmatched.
        log.error("registry %s not readable (%s): routes on supervision class will not match", settings.registry, exc)
        return {}
    return {e.id: e.supervision_class for e in registry.enterprises.values()}


def incident_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The `incidents` and `notices` consumer: manual commits after the tasks are stored, from the earliest offset."""
    session_ms = int(settings.session_timeout_s * 1000)
    return AIOKafkaConsumer(
        settings.topic(INCIDENTS_TOPIC),
        settings.topic(NOTICES_TOPIC),
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


async def consume_forever(
    settings: Settings,
    routing: Callable[[], Routing],
    store: TaskStore,
    kick: asyncio.Event,
    classes: Mapping[str, str] | None = None,
) -> None:
    """Read incidents and notices until cancelled; commit the offsets of what one fetch brought once its tasks
    (and their notifications, in the outbox) are stored, all in one transaction."""
    consumer = incident_consumer(settings)
    await _start_consumer(consumer, settings)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if not batches:
                continue
            # Partitions in turn, each in offset order: an incident's events share a key, so a partition.
            notices = settings.topic(NOTICES_TOPIC)
            raws = [(tp.topic == notices, m.value) for tp, messages in batches.items() for m in messages]
            await _store_until_done(raws, routing(), store, classes)
            kick.set()  # revisions and held-then-released messages queue without new tasks too
            await _commit(consumer, {tp: messages[-1].offset + 1 for tp, messages in batches.items()})
    finally:
        await consumer.stop()


async def serve(settings: Settings) -> None:
    """Run the consumer, the delivery sweep and the HTTP API in this loop until cancelled or SIGTERM."""
    live = LiveRouting(settings.routing, settings.alerts_api)
    classes = supervision_classes(settings)
    store = await asyncio.to_thread(TaskStore, settings.alerts_store)
    store.channels_of = lambda department: live.current.channels_of(department)
    store.inhibit_rules = live.current.inhibit_rules
    client = httpx.AsyncClient(timeout=settings.delivery_timeout_s)
    deliveries = Deliveries(routing=live.current, store=store, client=client, settings=settings)
    loop = asyncio.get_running_loop()
    kick = asyncio.Event()
    app = create_app(settings, store, lambda: live.current)
    app.state.on_queued = lambda: loop.call_soon_threadsafe(kick.set)  # called from API worker threads
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.alerts_host,
            port=settings.alerts_port,
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=5,  # open console pages must not hold a stop up
        )
    )
    stop = asyncio.Event()
    restore_signals = _handle_signals(lambda: loop.call_soon_threadsafe(stop.set))
    api = asyncio.create_task(_run_server(server, settings), name="alerts-api")
    jobs: list[asyncio.Task] = []
    child = None
    try:
        await _until_listening(server, api)
        freeze_startup_heap()
        log.info(
            "alert service: API on %s, %d departments, %d routes, tasks in %s",
            settings.alerts_api,
            len(live.current.departments),
            len(all_routes(live.current)),
            store.location,
        )
        if settings.alerts_store_process:
            child = store_process.start(settings, logging.getLevelName(logging.getLogger().getEffectiveLevel()))
            jobs.append(asyncio.create_task(store_process.watch(*child, kick), name="alerts-consumer-process"))
        else:
            jobs.append(
                asyncio.create_task(
                    consume_forever(settings, lambda: live.current, store, kick, classes), name="alerts-consumer"
                )
            )
        jobs.append(
            asyncio.create_task(reload_forever(live, deliveries, store, settings.alerts_reload_s), name="reload")
        )
        jobs.append(
            asyncio.create_task(pump_outbox(deliveries, store, kick, settings.alerts_redeliver_s), name="alerts-outbox")
        )
        jobs.append(
            asyncio.create_task(
                escalate_forever(store, lambda: live.current, lambda _: kick.set(), settings.alerts_escalation_tick_s),
                name="alerts-escalation",
            )
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
        if child is not None:
            await store_process.stop(*child)
        await deliveries.close()
        app.state.stopping.set()  # ends the console's event streams, which uvicorn would wait for
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


async def _store_until_done(
    raws: list[tuple[bool, bytes | None]], routing: Routing, store: TaskStore, classes: Mapping[str, str] | None
) -> list[Task]:
    # A database error is not the messages' fault: retry the batch (its transaction was rolled
    # back) rather than skip it, and keep the offsets uncommitted meanwhile.
    while True:
        try:
            return await asyncio.to_thread(store_messages, raws, routing=routing, store=store, classes=classes)
        except DB_ERRORS as exc:
            log.error("cannot store tasks in %s (%s); retrying in 1 s", store.location, exc)
            await asyncio.sleep(1)


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        # Typically a rebalance: the next owner re-reads these messages, and the store's
        # UNIQUE(incident_id, department) turns them into no-ops.
        log.warning("commit of %s failed: %s", offsets, exc)


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
