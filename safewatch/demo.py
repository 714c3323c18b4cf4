"""`safewatch demo`: the whole path on the embedded stack, bounded in time, with a summary.

Starts the stack, runs `safewatch worker` and `safewatch alerts serve` as child processes,
simulates every site of the registry in real time (a scripted tank-area leak included),
waits for the pipeline to drain, and prints what happened and where to look.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from alerts.auth import issue_token, list_tokens, revoke_token
from alerts.store import TaskStore
from config.settings import Settings
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry
from sensors.simulator import PlantSimulator, default_demo_scenarios
from streams.influx import query, rows
from streams.worker import topic_specs

from .processes import settings_env, worker_metrics
from .stack import ensure_topics, service_running, stack_up, start_service, stop_part

console = Console()


async def run_simulation(
    settings: Settings,
    *,
    duration_s: float,
    rate: float = 1.0,
    seed: int = 0,
    scenarios: bool = True,
    progress=None,
    on_tick=None,
) -> Counter:
    """Produce simulated frames for `duration_s` of event time; `rate` ticks per wall second (0 = flat out)."""
    registry = load_registry(settings.registry)
    start_ms = int(time.time() * 1000)
    # The leak opens and clears inside the run, so the summary shows a whole incident.
    # (gas alarms stay open 30 s after the value is back: the catalogue's off-delay)
    scen = (
        default_demo_scenarios(
            registry,
            start_s=duration_s * 0.1,
            leak_s=duration_s * 0.3,
            silent_s=duration_s * 0.4,
            malformed_s=min(8.0, duration_s * 0.1),
        )
        if scenarios
        else []
    )
    sim = PlantSimulator(registry, seed=seed, start_ms=start_ms, tick_s=1.0, scenarios=scen)
    counts: Counter = Counter()
    ticks = int(duration_s)
    started = time.monotonic()
    async with TelemetryProducer(
        settings.bootstrap, linger_ms=settings.producer_linger_ms, timeout_s=settings.producer_timeout_s
    ) as producer:
        for n in range(ticks):
            for topic, key, value in sim.tick():
                await producer.send(settings.topic(topic), key, value)
                counts["messages"] += 1
            await producer.flush()
            if on_tick is not None:
                await on_tick(n + 1, counts)
            if rate > 0:
                await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
    return counts


def _wait_for(check, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


def summary(settings: Settings, since_ms: int) -> dict:
    """What the run produced, read back from InfluxDB and the alert service."""
    where = f"time >= {since_ms}ms"
    readings = rows(query(settings, f'SELECT count("value") FROM "reading" WHERE {where}'))
    hazards = rows(query(settings, f'SELECT count("hazard_id") FROM "hazard" WHERE {where} GROUP BY "event"'))
    kinds = rows(
        query(settings, f'SELECT count("hazard_id") FROM "hazard" WHERE {where} AND "event" = \'open\' GROUP BY "kind"')
    )
    incidents = rows(query(settings, f'SELECT "incident_id", "severity", "status" FROM "incident" WHERE {where}'))
    dead = rows(query(settings, f'SELECT sum("count") FROM "deadletter" WHERE {where} GROUP BY "reason"'))
    notices = rows(query(settings, f'SELECT last("open") AS "open" FROM "notice" WHERE {where} GROUP BY "notice_id"'))
    tasks = httpx.get(f"{settings.alerts_api}/tasks", headers=_auth(settings), timeout=5).json()
    # The alert store outlives a demo run: count only tasks for incidents of this run.
    tasks = [t for t in tasks if t["incident"].get("opened_at", 0) >= since_ms]
    return {
        "readings": int(readings[0]["count"]) if readings else 0,
        "hazards": {r["event"]: int(r["count"]) for r in hazards},
        "kinds": {r["kind"]: int(r["count"]) for r in kinds},
        "incidents": {r["incident_id"]: r for r in incidents},
        "deadletter": {r["reason"]: int(r["sum"]) for r in dead},
        "notices": (len(notices), sum(int(r["open"]) for r in notices)),
        "tasks": tasks,
    }


def print_summary(settings: Settings, s: dict, produced: Counter) -> None:
    """The closing table of the demo."""
    table = Table(title="safewatch demo — summary", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("telemetry messages produced", str(produced["messages"]))
    table.add_row("readings stored in InfluxDB", str(s["readings"]))
    table.add_row("hazards opened", str(s["hazards"].get("open", 0)))
    table.add_row("hazards cleared", str(s["hazards"].get("clear", 0)))
    if s["kinds"]:
        table.add_row("  opened, by kind", ", ".join(f"{k} {n}" for k, n in sorted(s["kinds"].items())))
    if s["hazards"].get("suppressed"):
        table.add_row("  suppressed (maintenance)", str(s["hazards"]["suppressed"]))
    severities: Counter[str] = Counter()
    latest: dict[str, str] = {}
    for inc_id, r in s["incidents"].items():
        latest[inc_id] = r["severity"]
    severities.update(latest.values())
    table.add_row("incidents", f"{len(latest)} ({', '.join(f'{k} {v}' for k, v in severities.items()) or '-'})")
    table.add_row("maintenance notices (one per site)", f"{s['notices'][0]} ({s['notices'][1]} open)")
    by_dept: Counter = Counter()
    for t in s["tasks"]:
        what = "maintenance tasks" if t["incident_id"].startswith("NOTICE-") else "dispatch tasks"
        by_dept[(what, t["department"], t["status"])] += 1
    for (what, dept, status), n in sorted(by_dept.items()):
        table.add_row(f"{what} → {dept} ({status})", str(n))
    if not by_dept:
        table.add_row("dispatch tasks", "0")
    for reason, n in sorted(s["deadletter"].items()):
        table.add_row(f"dead-lettered: {reason}", str(n))
    console.print(table)
    console.print(
        f"InfluxDB: {settings.influx}  database [bold]{settings.influx_db}[/] "
        f"(measurements reading, hazard, incident, notice, deadletter)"
    )
    token_file = demo_token_file(settings)
    console.print(
        f"Alert API: {settings.alerts_api}/tasks (needs the demo's duty-officer token: "
        f'curl -H "Authorization: Bearer $(cat {token_file})" {settings.alerts_api}/tasks)'
    )
    console.print(
        f"demo inbox (what each department received, no token): {settings.alerts_api}/inbox/<department>, "
        f"e.g. {settings.alerts_api}/inbox/county-emergency"
    )
    console.print(
        f"Duty console: {settings.alerts_api}/ (log in with the token in {token_file}); "
        f"wall view {settings.alerts_api}/wall; public report form {settings.alerts_api}/report"
    )
    console.print(f"Logs: {settings.state_dir / 'logs'}")


def run_demo(settings: Settings, *, duration_s: float = 60.0, keep: bool = True) -> int:
    """Run the demo; returns the process exit code."""
    console.rule("[bold]safewatch demo")
    console.print("starting the embedded stack (Tansu broker, InfluxDB) …")
    stack_up(settings)
    ensure_topics(settings, topic_specs(settings))
    since_ms = int(time.time() * 1000)
    # The demo inbox stands in for the departments' endpoints; only the demo mounts it.
    settings = settings.model_copy(update={"alerts_demo_inbox": True})
    env = settings_env(settings, dict(os.environ))
    logs = settings.state_dir / "logs"
    start_service(settings, "worker", env)
    start_service(settings, "alerts", env)
    try:
        if not _wait_for(lambda: _healthy(f"{settings.alerts_api}/health"), 30):
            console.print(f"[red]alert service did not come up; see {logs / 'alerts.log'}")
            return 1
        token_file = provision_demo_token(settings)
        console.print(f"a duty-officer API token for the demo is in {token_file}")
        console.print(f"worker and alert service running; simulating all sites for {duration_s:.0f} s …")
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("simulating", total=int(duration_s), info="")

            async def on_tick(n, counts):
                m = worker_metrics(settings)
                progress.update(
                    task,
                    completed=n,
                    info=(
                        f"sent {counts['messages']} msgs · worker read {int(m.get('safewatch_messages_total', 0))}"
                        f" · hazard events {int(m.get('safewatch_hazard_events_total', 0))}"
                        f" · incident events {int(m.get('safewatch_incident_events_total', 0))}"
                    ),
                )
                if not service_running(settings, "worker"):
                    raise RuntimeError(f"the worker exited; see {logs / 'worker.log'}")

            produced = asyncio.run(run_simulation(settings, duration_s=duration_s, on_tick=on_tick))
        console.print("waiting for the worker to drain and the alert service to deliver …")
        drained = _wait_for(
            lambda: worker_metrics(settings).get("safewatch_messages_total", 0) >= produced["messages"], 60
        )
        if not drained:
            console.print("[yellow]the worker did not read every message within 60 s; the summary is partial")
        time.sleep(3)  # the alert service's fetch and delivery
        print_summary(settings, summary(settings, since_ms), produced)
        return 0
    finally:
        if keep:
            console.print(
                f"the worker and the alert service keep running, so the addresses above answer "
                f"(logs in {logs}); `safewatch stack down` stops them and the stack."
            )
        else:
            for part in ("worker", "alerts"):
                stop_part(settings, part)
            console.print(
                "worker and alert service stopped; the stack stays up (`safewatch stack down` stops it). "
                "Start them again with `safewatch worker` and `safewatch alerts serve`."
            )


DEMO_TOKEN_NAME = "make demo (duty officer)"


def demo_token_file(settings: Settings) -> Path:
    """Where the demo leaves its API token (readable by its owner only)."""
    return settings.state_dir / "demo-token"


def provision_demo_token(settings: Settings) -> Path:
    """Revoke the previous demo token, issue a fresh duty-officer one, write it to its file (0600)."""
    store = TaskStore(settings.alerts_store)
    try:
        for old in list_tokens(store):
            if old.name == DEMO_TOKEN_NAME and old.revoked_at is None:
                revoke_token(store, old.token_id)
        _, secret = issue_token(store, DEMO_TOKEN_NAME, "duty_officer")
    finally:
        store.close()
    path = demo_token_file(settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return path


def _auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {demo_token_file(settings).read_text().strip()}"}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
