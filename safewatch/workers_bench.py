"""`safewatch bench --workers N`: one group of N worker processes draining the same preloaded frames.

Reports the aggregate rate, each worker's share, and CPU seconds per million readings read from
/proc: on a 2-core box shared with the broker and InfluxDB the rates say little about a bigger
machine, the cost per reading does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from config.settings import Settings
from config.topics import SECTORS
from streams.worker import topic_specs

from .bench import bench_database, bench_registry, console, drop_bench_database, frames, produce_all, start_worker
from .processes import cpu_seconds, stop_process, worker_metrics
from .stack import delete_topics, ensure_topics, stack_up


@dataclass
class WorkerShare:
    readings: float
    cpu_s: float


@dataclass
class GroupRun:
    workers: int
    readings: float
    seconds: float
    shares: list[WorkerShare]

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drain_group(settings: Settings, prefix: str, registry: Path, n: int, total: int, logs: Path) -> GroupRun:
    """Start `n` workers in one group on preloaded topics and time them from first reading to the last."""
    ports = [_free_port() for _ in range(n)]
    procs = [
        start_worker(settings.model_copy(update={"worker_web_port": p}), prefix, registry, logs / f"bench-w{i}.log")
        for i, p in enumerate(ports)
    ]
    try:
        counts = [0.0] * n
        start: tuple[float, list[float], list[float]] | None = None
        last_change = time.perf_counter()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {i} exited with {proc.returncode} (log: {logs}/bench-w{i}.log)")
            now = [worker_metrics(settings, port=p).get("safewatch_readings_total", 0.0) for p in ports]
            t = time.perf_counter()
            if start is None and sum(now) > 0:
                # CPU before the first reading (imports, joining the group) is start-up, not cost per reading.
                start = (t, now, [cpu_seconds(p.pid) for p in procs])
            if now != counts:
                counts, last_change = now, t
            if sum(counts) >= total:
                break
            time.sleep(0.25)
        cpu_end = [cpu_seconds(p.pid) for p in procs]
    finally:
        for proc in procs:
            stop_process(proc)
    if start is None:
        raise RuntimeError("no worker read anything")
    t0, n0, c0 = start
    shares = [WorkerShare(counts[i] - n0[i], cpu_end[i] - c0[i]) for i in range(n)]
    return GroupRun(n, sum(s.readings for s in shares), last_change - t0, shares)


def run_workers_bench(settings: Settings, *, workers: int, readings: int, frame_size: int) -> list[GroupRun]:
    """One worker, then `workers` in one group, each draining the same frames from topics of its own."""
    stack_up(settings)
    settings = bench_database(settings)
    rng = np.random.default_rng(1)
    work = Path(tempfile.mkdtemp(prefix="safewatch-bench-workers-"))
    registry = work / "registry.yaml"
    layout = bench_registry(registry, sites=200)
    msgs = frames(layout, readings // frame_size, frame_size, t0_ms=int(time.time() * 1000) - 3_600_000, rng=rng)
    total = len(msgs) * frame_size
    run_id = time.strftime("%H%M%S")
    runs = []
    for n in sorted({1, workers}):
        prefix = f"bench-{run_id}-w{n}."
        console.print(f"{n} worker(s): {len(msgs):,} frames of {frame_size} …")
        ensure_topics(settings, topic_specs(settings.model_copy(update={"topic_prefix": prefix})))
        asyncio.run(produce_all(settings, prefix, msgs))
        runs.append(drain_group(settings, prefix, registry, n, total, settings.state_dir / "logs"))
    drop_bench_database(settings)
    delete_topics(settings, f"bench-{run_id}-")
    print_group_runs(runs, settings)
    return runs


def print_group_runs(runs: list[GroupRun], settings: Settings) -> None:
    """Aggregate and per-worker rates, and CPU seconds per million readings."""
    table = Table(title="safewatch bench --workers (one run, same broker)")
    for col in ("workers", "worker", "readings", "readings/s", "share", "CPU s / M readings"):
        table.add_column(col, justify="right")
    for run in runs:
        cpu = sum(s.cpu_s for s in run.shares)
        table.add_row(
            str(run.workers), "all", f"{run.readings:,.0f}", f"{run.rate:,.0f}", "100%", _per_m(cpu, run.readings)
        )
        for i, s in enumerate(run.shares):
            share = s.readings / run.readings if run.readings else 0.0
            rate = s.readings / run.seconds if run.seconds else 0.0
            table.add_row("", str(i), f"{s.readings:,.0f}", f"{rate:,.0f}", f"{share:.0%}", _per_m(s.cpu_s, s.readings))
    console.print(table)
    topics = len(SECTORS)
    console.print(
        f"{topics} telemetry topics × {settings.partitions} partitions = {topics * settings.partitions} partitions: "
        f"the most workers of one group that get work · {os.cpu_count()} cores shared by broker, InfluxDB and workers"
    )


def _per_m(cpu_s: float, readings: float) -> str:
    return f"{cpu_s / readings * 1e6:.2f}" if readings else "-"
