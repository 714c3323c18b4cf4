"""`safewatch bench --soak MINUTES`: a worker under steady live load, its memory sampled over time.

Every site of a synthetic registry sends one frame a second stamped with the wall clock (so the
worker sees live data, timers included); the worker's and the broker's resident memory are read
from /proc every `sample_s`. The worker's should stay flat once warm; the broker's is reported
apart (Tansu with memory storage keeps every message, so it grows by design).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from rich.table import Table

from config.settings import Settings
from sensors.producer import TelemetryProducer
from streams.worker import topic_specs

from .bench import SITE_SENSORS, bench_database, bench_registry, console, drop_bench_database, start_worker
from .processes import stop_process, worker_metrics
from .stack import ensure_topics, stack_status, stack_up

WARM_UP_S = 120.0  # caches, the registry's numpy columns and the first checkpoints settle by then


@dataclass
class Sample:
    elapsed_s: float
    worker_rss_mb: float
    broker_rss_mb: float | None
    readings: float


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _drive(settings: Settings, prefix: str, layout, seconds: float, sample, sample_s: float) -> None:
    rng = np.random.default_rng(7)
    start = time.monotonic()
    next_sample = start
    async with TelemetryProducer(settings.bootstrap, linger_ms=settings.producer_linger_ms) as producer:
        tick = 0
        while (now := time.monotonic()) - start < seconds:
            ts = int(time.time() * 1000)
            for sector, site, ids in layout:
                values = (3.0 + rng.normal(0, 0.5, len(ids))).round(3).tolist()
                body = {
                    "site_id": site,
                    "ts": ts,
                    "readings": [{"sensor_id": s, "value": v} for s, v in zip(ids, values, strict=True)],
                }
                await producer.send(f"{prefix}telemetry.{sector}", site, orjson.dumps(body))
            if now >= next_sample:
                sample(now - start)
                next_sample += sample_s
            tick += 1
            delay = start + tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
    sample(time.monotonic() - start)


def run_soak(settings: Settings, *, minutes: float, rate: int, sample_s: float = 30.0) -> list[Sample]:
    """Run the soak, print the memory series and whether the worker stayed within 10 %."""
    stack_up(settings)
    settings = bench_database(settings)
    work = Path(tempfile.mkdtemp(prefix="safewatch-soak-"))
    registry = work / "registry.yaml"
    layout = bench_registry(registry, sites=max(1, rate // SITE_SENSORS))
    prefix = f"bench-{time.strftime('%H%M%S')}-soak."
    ensure_topics(settings, topic_specs(settings.model_copy(update={"topic_prefix": prefix})))
    broker_pid = next((p.pid for p in stack_status(settings) if p.name == "broker"), None)
    worker = start_worker(settings, prefix, registry, settings.state_dir / "logs" / "bench-soak-worker.log")
    samples: list[Sample] = []

    def sample(elapsed: float) -> None:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}")
        broker = rss_mb(broker_pid) if broker_pid else None
        readings = worker_metrics(settings).get("safewatch_readings_total", 0.0)
        samples.append(Sample(elapsed, rss_mb(worker.pid), broker, readings))
        console.print(
            f"{elapsed / 60:5.1f} min  worker {samples[-1].worker_rss_mb:7.1f} MiB  "
            f"broker {broker or 0:8.1f} MiB  readings {readings:,.0f}"
        )

    try:
        console.print(f"soak: {len(layout)} sites × {SITE_SENSORS} sensors, one frame a second each, {minutes:g} min")
        asyncio.run(_drive(settings, prefix, layout, minutes * 60, sample, sample_s))
    finally:
        stop_process(worker)
    drop_bench_database(settings)
    print_soak(samples, rate)
    return samples


def print_soak(samples: list[Sample], rate: int) -> None:
    """Worker memory after warm-up vs at the end, and the broker's apart."""
    warm = [s for s in samples if s.elapsed_s >= WARM_UP_S] or samples
    first, last = warm[0], warm[-1]
    peak = max(s.worker_rss_mb for s in warm)
    growth = (last.worker_rss_mb - first.worker_rss_mb) / first.worker_rss_mb
    span = last.elapsed_s - samples[0].elapsed_s
    achieved = (last.readings - samples[0].readings) / span if span > 0 else 0.0
    table = Table(title=f"safewatch bench --soak ({rate:,} readings/s offered, {achieved:,.0f} evaluated)")
    for col in (
        "process",
        f"RSS at {first.elapsed_s / 60:.1f} min",
        f"at {last.elapsed_s / 60:.1f} min",
        "peak",
        "change",
    ):
        table.add_column(col, justify="right")
    table.add_row("worker", f"{first.worker_rss_mb:.1f}", f"{last.worker_rss_mb:.1f}", f"{peak:.1f}", f"{growth:+.1%}")
    if first.broker_rss_mb and last.broker_rss_mb:
        b_growth = (last.broker_rss_mb - first.broker_rss_mb) / first.broker_rss_mb
        b_peak = max(s.broker_rss_mb or 0.0 for s in warm)
        table.add_row(
            "broker", f"{first.broker_rss_mb:.1f}", f"{last.broker_rss_mb:.1f}", f"{b_peak:.1f}", f"{b_growth:+.1%}"
        )
    console.print(table)
    verdict = "within" if abs(growth) <= 0.10 and peak <= first.worker_rss_mb * 1.10 else "NOT within"
    console.print(f"worker memory after a {WARM_UP_S:.0f} s warm-up: {verdict} 10 % of its first sample")
