"""`safewatch bench --alerts`: incidents per second through the alert service — routing, store and
delivery to a local receiver — and time from incident to first delivery, beside the same run's
store-only rate, on the SQLite store and on PostgreSQL.

Per store, on fresh topics and a fresh store:
1. store only: the incidents routed and stored in this process, in batches as the consumer takes them;
2. service: the same number of incidents preloaded on `incidents`, drained by a real `safewatch
   alerts serve` that POSTs every task's first message to a local receiver; incidents/s from the
   receiver's first arrival to its last;
3. latency: once that drain is settled, incidents sent at a fixed rate to that service; time from
   sending an incident to its first message at the receiver, p50/p99.
Steps 2 and 3 run twice: with the service's consumer in its own process, and without
(`ALERTS_STORE_PROCESS`).
Incidents are the shipped registry's enterprises and sectors, routed by the shipped routing tree,
each at a site of its own (so nothing is inhibited). A benchmark: it reports and asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from alerts.routing import load_routing, route
from alerts.service import route_incident
from alerts.store import TaskStore
from config.settings import PROJECT_ROOT, Settings
from config.topics import INCIDENTS_TOPIC, NOTICES_TOPIC
from rules.models import IncidentEvent
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry

from .postgres import TempPostgres, pg_bin_dir
from .processes import settings_env, spawn_safewatch, stop_process, tree_cpu_seconds
from .stack import delete_topics, ensure_topics, stack_up

console = Console(width=150)
SEVERITIES = ("yellow", "orange", "red", "blue")
BATCH = 500  # the consumer's max_records per fetch


@dataclass
class Row:
    path: str
    per_s: float | None = None
    store_only: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""


class Receiver:
    """A department endpoint on its own thread and loop: answers 200 at once and records when
    each message arrived, with its incident and kind (keep-alive HTTP/1.1, as httpx sends it)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str]] = []  # (epoch s, incident id, kind)
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-receiver", daemon=True)
        self.thread.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(h[15:]) for h in head.split(b"\r\n") if h[:15].lower() == b"content-length:"), 0)
                body = orjson.loads(await reader.readexactly(length))
                self.arrivals.append((time.time(), body["task"]["incident_id"], body["kind"]))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        """Stop serving."""
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def incidents(settings: Settings, tag: str, n: int, *, at_ms: int | None = None) -> list[IncidentEvent]:
    """`n` open incidents of the registry's enterprises and sectors, each at a site of its own."""
    registry = load_registry(settings.registry)
    sites = list(registry.sites.values())
    out = []
    for i in range(n):
        site = sites[i % len(sites)]
        enterprise = registry.enterprises[site.enterprise_id]
        now = at_ms if at_ms is not None else int(time.time() * 1000)
        out.append(
            IncidentEvent(
                incident_id=f"{tag}-{i}",
                status="open",
                severity=SEVERITIES[i % len(SEVERITIES)],
                rule_id=f"{site.sector}.bench",
                title=f"bench incident {i}",
                site_id=f"{site.id}-{tag}-{i}",
                site_name=site.name,
                enterprise_id=enterprise.id,
                enterprise_name=enterprise.name,
                region=site.region,
                sector=site.sector,
                opened_at=now,
                updated_at=now,
                hazard_ids=[f"hz-{tag}-{i}"],
                open_hazard_ids=[f"hz-{tag}-{i}"],
                timeline=[],
            )
        )
    return out


def store_only(settings: Settings, target: Path | str, events: list[IncidentEvent], routing_file: Path) -> float:
    """Route and store `events` in this process, `BATCH` per transaction; returns incidents/s."""
    routing = load_routing(routing_file, alerts_api=settings.alerts_api)
    classes = {e.id: e.supervision_class for e in load_registry(settings.registry).enterprises.values()}
    raws = [e.to_json() for e in events]
    store = TaskStore(target)
    store.channels_of = routing.channels_of
    store.inhibit_rules = routing.inhibit_rules
    try:
        start = time.perf_counter()
        for i in range(0, len(raws), BATCH):
            routed = [r for raw in raws[i : i + BATCH] if (r := route_incident(raw, routing, classes)) is not None]
            store.record_incidents(routed)
        return len(raws) / (time.perf_counter() - start)
    finally:
        store.close()


async def produce(settings: Settings, topic: str, events: list[IncidentEvent], rate: float | None) -> dict[str, float]:
    """Send incidents (at `rate` per second, or as fast as possible); returns each one's send time (epoch s)."""
    sent: dict[str, float] = {}
    async with TelemetryProducer(settings.bootstrap, linger_ms=settings.producer_linger_ms) as producer:
        start = time.perf_counter()
        for i, e in enumerate(events):
            if rate:
                e = e.model_copy(update={"opened_at": int(time.time() * 1000), "updated_at": int(time.time() * 1000)})
            sent[e.incident_id] = time.time()
            await producer.send(topic, e.site_id, e.to_json())
            if rate and (delay := start + (i + 1) / rate - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
        await producer.flush()
    return sent


def wait_for(predicate, timeout_s: float, what: str, proc) -> None:
    """Poll until `predicate()`; raise naming `what` on timeout or if the service died."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"the alert service exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_store(
    settings: Settings, name: str, target_for, work: Path, run_id: str, *, n: int, rate: float, seconds: float
) -> list[Row]:
    """Store only, then the service with its consumer in-process and in a process of its own;
    `target_for(label)` gives a fresh store target."""
    receiver = Receiver()
    try:
        routing_file = work / f"routing-{name}.yaml"
        text = (PROJECT_ROOT / "config" / "routing.yaml").read_text()
        routing_file.write_text(text.replace("${ALERTS_API}/inbox", f"{receiver.url}/dept"))
        alone = store_only(settings, target_for("store-only"), incidents(settings, f"so-{name}", n), routing_file)

        rows = [Row(f"{name}: store only (route + store, {BATCH} per transaction)", alone)]
        for split in (False, True):
            rows += service_rows(
                settings,
                name,
                split,
                target_for,
                work,
                run_id,
                receiver,
                routing_file,
                alone,
                n=n,
                rate=rate,
                seconds=seconds,
            )
        return rows
    finally:
        receiver.close()


def service_rows(
    settings: Settings,
    name: str,
    split: bool,
    target_for,
    work: Path,
    run_id: str,
    receiver: Receiver,
    routing_file: Path,
    alone: float,
    *,
    n: int,
    rate: float,
    seconds: float,
) -> list[Row]:
    """A real `safewatch alerts serve` (its consumer in a process of its own if `split`): the drain
    of `n` preloaded incidents, then first-delivery latency at `rate`."""
    routing = load_routing(routing_file, alerts_api=settings.alerts_api)
    mode = "-split" if split else ""
    label = f"{name}: service, consumer in its own process" if split else f"{name}: service"
    prefix = f"bench-{run_id}-alerts-{name}{mode}."
    # the service reads notices too: an empty topic of its own, so it subscribes to no missing one
    ensure_topics(settings, {prefix + INCIDENTS_TOPIC: {}, prefix + NOTICES_TOPIC: {}})
    tag = f"tp-{name}{mode}"
    preload = incidents(settings, tag, n)
    tasks = sum(len(route(e, routing)) for e in preload)
    asyncio.run(produce(settings, prefix + INCIDENTS_TOPIC, preload, None))
    target = target_for(f"service{mode}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service_settings = settings.model_copy(
        update={
            "topic_prefix": prefix,
            "routing": routing_file,
            "alerts_db": target if isinstance(target, Path) else work / f"unused{mode}.sqlite3",
            "alerts_db_url": target if isinstance(target, str) else None,
            "alerts_port": port,
            "alerts_group": f"{prefix}group",
            "session_timeout_s": 3.0,
            "alerts_store_process": split,
        }
    )
    log = settings.state_dir / "logs" / "bench-alerts.log"
    proc = spawn_safewatch(["alerts", "serve"], log, settings_env(service_settings, dict(os.environ)))
    try:
        # First messages of this mode's incidents only: the receiver serves both modes of the run.
        mine = lambda ids_from: [t for t, i, kind in receiver.arrivals if kind == "task" and i.startswith(ids_from)]
        firsts = lambda: len(mine(tag + "-")) + len(mine(f"lat-{name}{mode}-"))
        # The service's own CPU (its consumer process's too) from its first delivery to its last
        # (start-up left out): what transfers to a machine where it has the cores to itself.
        wait_for(lambda: firsts() >= 1, 600, f"a first message (log: {log})", proc)
        cpu0 = tree_cpu_seconds(proc.pid)
        wait_for(lambda: firsts() >= tasks, 600, f"{tasks} first messages (log: {log})", proc)
        cpu_ms = (tree_cpu_seconds(proc.pid) - cpu0) / n * 1000
        times = mine(tag + "-")
        drained = n / (max(times) - min(times))
        rows = [
            Row(
                f"{label} (routing, store, delivery to a local receiver)",
                drained,
                alone,
                note=f"{n:,} incidents, {tasks:,} tasks, one webhook POST each; service CPU "
                f"{cpu_ms:.2f} ms/incident (≈{1000 / max(cpu_ms, 1e-9):,.0f}/s on a core of its own)",
            )
        ]
        # Latency at a steady rate, not the tail of the burst: start once every outcome of the
        # drain is written down (the receiver sees the last POSTs before the service does).
        watcher = TaskStore(target)
        try:
            wait_for(lambda: watcher.stats()["outbox_unsent"] == 0, 120, "the drain's outbox to empty", proc)
        finally:
            watcher.close()
        time.sleep(2)
        live = incidents(settings, f"lat-{name}{mode}", max(1, int(rate * seconds)))
        live_tasks = sum(len(route(e, routing)) for e in live)
        before = firsts()
        sent = asyncio.run(produce(settings, prefix + INCIDENTS_TOPIC, live, rate))
        wait_for(lambda: firsts() >= before + live_tasks, 120, "the latency run's first messages", proc)
        first: dict[str, float] = {}
        for t, incident_id, kind in receiver.arrivals:
            if kind == "task" and incident_id in sent:
                first[incident_id] = min(t, first.get(incident_id, t))
        lat = [(first[i] - sent[i]) * 1000 for i in first]
        rows.append(
            Row(
                f"{label}: incident → first delivery @ {rate:g} incidents/s",
                p50_ms=pct(lat, 50),
                p99_ms=pct(lat, 99),
                note=f"{len(lat)} incidents, {live_tasks} tasks",
            )
        )
    finally:
        stop_process(proc)
    return rows


def run_alerts_bench(
    settings: Settings, *, incidents_n: int, rate: float, seconds: float, postgres: bool = True
) -> list[Row]:
    """Both stores, one run; prints the table."""
    stack_up(settings)
    run_id = time.strftime("%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="safewatch-bench-alerts-"))
    rows = run_store(
        settings,
        "sqlite",
        lambda label: work / f"{label}.sqlite3",
        work,
        run_id,
        n=incidents_n,
        rate=rate,
        seconds=seconds,
    )
    if postgres and pg_bin_dir() is not None:
        # A throwaway cluster with fsync on: commits as durable as SQLite's synchronous=FULL.
        with TempPostgres() as pg:
            rows += run_store(
                settings,
                "postgresql",
                lambda label: pg.new_schema(),
                work,
                run_id,
                n=incidents_n,
                rate=rate,
                seconds=seconds,
            )
    elif postgres:
        rows.append(Row("postgresql", note="skipped: no PostgreSQL server (safewatch stack install)"))
    delete_topics(settings, f"bench-{run_id}-")
    print_rows(rows)
    return rows


def print_rows(rows: list[Row]) -> None:
    """The side-by-side table."""
    table = Table(title="safewatch bench --alerts (one run, same broker)")
    for col in ("path", "incidents/s", "vs store only", "p50 ms", "p99 ms", "note"):
        table.add_column(col, justify="left" if col in ("path", "note") else "right")

    def f(x, fmt="{:,.0f}"):
        return fmt.format(x) if x is not None else "-"

    for r in rows:
        ratio = f"{r.per_s / r.store_only:.1%}" if r.per_s and r.store_only else "-"
        table.add_row(r.path, f(r.per_s), ratio, f(r.p50_ms, "{:.1f}"), f(r.p99_ms, "{:.1f}"), r.note)
    console.print(table)
    console.print(f"{os.cpu_count()} cores shared by broker, PostgreSQL, alert service, receiver and load")
