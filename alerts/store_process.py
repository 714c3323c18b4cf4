"""The alert service's incident consumer in a process of its own (`ALERTS_STORE_PROCESS`).

A Python process gets one core (the GIL), and the service spent all of it: routing and storing
what the topics bring took a quarter, the webhook POSTs and their bookkeeping most of the rest.
With this on, a child process reads the incident and notice topics and stores the tasks and their
outbox rows, and tells the service through the pipe between them when a fetch is stored; the
service process delivers, escalates and serves the API. The child's counters reach the service's
/metrics once a second. The child stops when the service says so or when the service is gone,
killed included: it watches its end of the pipe between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from prometheus_client import Counter

from alerts import metrics
from config.settings import Settings

log = logging.getLogger(__name__)

FORWARD_S = 1.0  # how often the child sends its counters' increments
STOP = "stop"  # service → child
STORED = "stored"  # child → service: new outbox rows may wait
# The counters the consumer's code counts (in the child); the service adds their increments to its own.
FORWARDED: dict[str, Counter] = {
    "incidents": metrics.INCIDENTS,
    "bad_incidents": metrics.BAD_INCIDENTS,
    "notices": metrics.NOTICES,
    "unrouted": metrics.UNROUTED,
    "tasks_created": metrics.TASKS_CREATED,
}


def start(settings: Settings, loglevel: str) -> tuple[BaseProcess, Connection]:
    """Start the consumer process; returns it and the service's end of the pipe to it."""
    ctx = multiprocessing.get_context("spawn")  # not fork: the service has threads and a running loop
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_main, args=(settings, theirs, loglevel), name="alerts-store", daemon=True)
    proc.start()
    theirs.close()
    return proc, mine


async def watch(proc: BaseProcess, conn: Connection, kick: asyncio.Event) -> None:
    """Set `kick` when the child stored a fetch, add its counter increments to this process's
    counters; raises when the child ends."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            message = conn.recv()
            if message == STORED:
                kick.set()
            else:
                apply_counts(message)
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            if not ended.done():
                ended.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    try:
        await ended
    finally:
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(conn.fileno())
    await asyncio.to_thread(proc.join, 5)
    raise RuntimeError(f"the alert service's consumer process ended (exit code {proc.exitcode})")


async def stop(proc: BaseProcess, conn: Connection, timeout_s: float = 10.0) -> None:
    """Ask the child to stop (it leaves its consumer group), wait for it, then make sure."""
    with contextlib.suppress(OSError):
        conn.send(STOP)
    await asyncio.to_thread(proc.join, timeout_s)
    if proc.is_alive():
        log.warning("the consumer process did not stop in %.0f s; terminating it", timeout_s)
        proc.terminate()
        await asyncio.to_thread(proc.join, 5)
    with contextlib.suppress(EOFError, OSError):
        while conn.poll():  # its last increments, sent as it stopped
            apply_counts(conn.recv())
    conn.close()


def counts() -> dict[tuple[str, tuple[str, ...]], float]:
    """The forwarded counters' values now, by (name, label values)."""
    out = {}
    for name, counter in FORWARDED.items():
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(name, tuple(sample.labels.values()))] = sample.value
    return out


def apply_counts(increments: dict[tuple[str, tuple[str, ...]], float]) -> None:
    """Add increments (as `counts` keys them) to this process's counters."""
    for (name, labels), n in increments.items():
        counter = FORWARDED[name]
        (counter.labels(*labels) if labels else counter).inc(n)


def _main(settings: Settings, conn: Connection, loglevel: str) -> None:
    from config.logs import setup_logging

    # Ctrl-C in a terminal reaches the whole process group: the service decides when this stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging("alerts", loglevel)
    asyncio.run(_run(settings, conn))


async def _run(settings: Settings, conn: Connection) -> None:
    from alerts.routing import LiveRouting
    from alerts.service import consume_forever, supervision_classes
    from alerts.store import TaskStore
    from config.heap import freeze_startup_heap

    loop = asyncio.get_running_loop()
    live = LiveRouting(settings.routing, settings.alerts_api)
    classes = supervision_classes(settings)
    store = await asyncio.to_thread(TaskStore, settings.alerts_store)
    store.channels_of = lambda department: live.current.channels_of(department)
    store.inhibit_rules = live.current.inhibit_rules
    freeze_startup_heap()
    told: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = "the service is gone"
        loop.remove_reader(conn.fileno())
        if not told.done():
            told.set_result(message)

    async def reload() -> None:
        while True:
            await asyncio.sleep(settings.alerts_reload_s)
            try:
                if await asyncio.to_thread(live.reload_if_changed):
                    store.inhibit_rules = live.current.inhibit_rules
            except Exception:
                log.exception("routing reload failed; the old routing stays")

    sent: dict[tuple[str, tuple[str, ...]], float] = {}

    def send_increments() -> None:
        now = counts()
        increments = {k: v - sent.get(k, 0.0) for k, v in now.items() if v > sent.get(k, 0.0)}
        if increments:
            conn.send(increments)
            sent.update(now)

    async def forward() -> None:
        while True:
            await asyncio.sleep(FORWARD_S)
            send_increments()

    async def tell_stored() -> None:
        while True:
            await kick.wait()
            kick.clear()
            conn.send(STORED)

    loop.add_reader(conn.fileno(), readable)
    kick = asyncio.Event()  # set by the consumer after each stored fetch; passed on to the service
    jobs = [
        asyncio.create_task(consume_forever(settings, lambda: live.current, store, kick, classes), name="consumer"),
        asyncio.create_task(reload(), name="reload"),
        asyncio.create_task(forward(), name="forward"),
        asyncio.create_task(tell_stored(), name="tell-stored"),
    ]
    log.info("alert service consumer process: reading incidents and notices, tasks in %s", store.location)
    try:
        waiting: list[asyncio.Future] = [told, *jobs]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if told.done():
            log.info("alert service consumer process stopping: %s", told.result())
        for job in jobs:
            if job.done() and not job.cancelled() and (exc := job.exception()) is not None:
                raise exc
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)  # the consumer leaves its group
        with contextlib.suppress(OSError):
            send_increments()  # what was counted since the last second
        store.close()
