"""`safewatch bench`: the pipeline's readings/s and latency beside the raw broker limit.

Everything is measured in one run on the configured broker, each phase on its own topics
(a fresh topic prefix) so nothing left over counts:
1. raw: aiokafka produce and consume of the same frame messages, and raw end-to-end latency;
2. pipeline, frames: frames are loaded first, then a fresh `safewatch worker` drains them;
   readings/s is read off its Prometheus counter;
3. pipeline latency: frames at `--rate` and at `--peak-rate` through that worker; every 2 s each
   site raises one sensor past its set points (the next sensor each time) and clears it with its
   next reading, so hazard events come whose event time is the moment their reading was sent —
   latency is hazard received minus reading sent;
4. pipeline, single-reading messages: as 2, one reading per message; then latency as 3 at
   `--single-rate` single-reading messages/s.
It is a benchmark, not a test: it reports what it saw and asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from config.settings import Settings
from config.topics import HAZARDS_TOPIC, SECTORS, telemetry_topic
from history.retention import ensure_retention, run
from rules.engine import RuleEngine
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry
from sensors.uscc import check_char
from streams.influx import InfluxWriter, reading_lines
from streams.pipeline import Pipeline
from streams.worker import topic_specs

from .processes import cpu_seconds, spawn_safewatch, stop_process, worker_metrics
from .stack import delete_topics, ensure_topics, stack_down, stack_up

console = Console(width=150)  # the table is the point; do not let a narrow terminal fold it
SITE_SENSORS = 50
PROBE = "probe"  # each site's first sensor
FLIP_EVERY_S = 2.0  # the latency phase raises a hazard at each site this often
RAISED_KINDS = ("high", "high_high")  # the hazards a raised sensor opens and clears
BENCH_DB = "safewatch_bench_pipeline"
INGEST_DB = "safewatch_bench_ingest"  # InfluxDB's own ingest rate, measured apart


@dataclass
class Row:
    path: str
    messages_per_s: float | None = None
    readings_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def bench_registry(path: Path, sites: int) -> list[tuple[str, str, list[str]]]:
    """Write a synthetic registry of `sites` × 50 gas sensors; returns (sector, site, sensor ids)."""
    lines = ["regions:", '  - {code: "320500", name: 苏州市}', "enterprises:"]
    layout = []
    for e in range(max(1, sites // 10)):
        body = f"91320500MA{e:07d}"[:17]
        lines += [
            f"  - id: {body}{check_char(body)}",
            f"    name: Bench enterprise {e}",
            '    region: "320500"',
            "    supervision_class: C",
            "    sites:",
        ]
        for s in range(e * 10, min(sites, e * 10 + 10)):
            sector = SECTORS[s % len(SECTORS)]
            site = f"bench-{s:04d}"
            lines += [
                f"      - id: {site}",
                f"        name: Bench site {s}",
                f"        sector: {sector}",
                "        kind: bench",
                "        sensors:",
            ]
            ids = [f"{site}-{PROBE}"] + [f"{site}-g{k:02d}" for k in range(1, SITE_SENSORS)]
            for sid in ids:
                lines.append(
                    f'          - {{id: {sid}, quantity: combustible_gas, unit: "%LEL", range: [0, 100], '
                    f"alarms: {{high: 25, high_high: 50}}, period_s: 1, area: a{s % 5}, normal: 3}}"
                )
            layout.append((sector, site, ids))
    path.write_text("\n".join(lines) + "\n")
    return layout


def frames(layout, n_messages: int, frame_size: int, *, t0_ms: int, rng) -> list[tuple[str, str, bytes]]:
    """`n_messages` frames of `frame_size` readings, sites in turn, values in the normal band.

    Every sensor reports once per tick whatever the frame size (a site's tick is split over
    several messages when frames are small), as its 1 s sampling period says: otherwise the
    offline rule would rightly fire on every reading and the bench would measure hazards."""
    out = []
    per_tick = -(-SITE_SENSORS // frame_size)  # messages per site per tick
    for m in range(n_messages):
        sector, site, ids = layout[m % len(layout)]
        k = m // len(layout)
        tick, part = divmod(k, per_tick)
        chosen = ids[part * frame_size : (part + 1) * frame_size]
        values = (3.0 + rng.normal(0, 0.5, len(chosen))).round(3).tolist()
        if frame_size > 1:
            body = {
                "site_id": site,
                "ts": t0_ms + tick * 1000,
                "readings": [{"sensor_id": s, "value": v} for s, v in zip(chosen, values, strict=False)],
            }
        else:
            body = {"site_id": site, "sensor_id": chosen[0], "ts": t0_ms + tick * 1000, "value": values[0]}
        out.append((f"telemetry.{sector}", site, orjson.dumps(body)))
    return out


async def produce_all(settings: Settings, prefix: str, messages) -> float:
    """Send everything as fast as the producer goes; returns messages/s."""
    async with TelemetryProducer(settings.bootstrap, linger_ms=settings.producer_linger_ms) as producer:
        start = time.perf_counter()
        for topic, key, value in messages:
            await producer.send(prefix + topic, key, value)
        await producer.flush()
        return len(messages) / (time.perf_counter() - start)


async def consume_all(settings: Settings, topics: list[str], expected: int) -> float:
    """Read `expected` messages back with getmany; returns messages/s."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.fetch_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        got, start = 0, None
        deadline = time.monotonic() + 120
        while got < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            n = sum(len(v) for v in batch.values())
            if n and start is None:
                start = time.perf_counter()
                first = n
            got += n
        if start is None or got <= first:
            return 0.0
        return (got - first) / (time.perf_counter() - start)
    finally:
        await consumer.stop()


async def latency_run(
    settings: Settings,
    prefix: str,
    layout,
    *,
    rate_readings: int,
    seconds: float,
    frame_size: int,
    out_topic: str,
    raw: bool,
) -> tuple[list[float], float]:
    """Frames at a fixed rate; latency per frame in ms (raw: the frames themselves are read back),
    and the messages/s actually sent (below the rate asked if the generator could not keep up)."""
    consumer = AIOKafkaConsumer(
        out_topic,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.fetch_wait_ms,
    )
    await consumer.start()
    await consumer.seek_to_end()
    latencies: list[float] = []
    offered: list[float] = []
    start_ms = int(time.time() * 1000)
    rate_msgs = max(1, rate_readings // frame_size)
    n_total = int(rate_msgs * seconds)

    async def collect():
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time() * 1000
            for msgs in batch.values():
                for m in msgs:
                    d = orjson.loads(m.value)
                    if d.get("ts", 0) >= start_ms and (raw or d.get("kind") in RAISED_KINDS):
                        latencies.append(now - d["ts"])

    reader = asyncio.create_task(collect())
    try:
        # Every FLIP_EVERY_S each site raises one sensor past both set points, the next in turn, and
        # its next reading clears it: hazards come at the same pace at any reading rate, and no
        # sensor opens often enough to be held as flapping (5 openings in 10 minutes).
        per_site_s = rate_msgs / len(layout)
        flip_every = max(1, round(FLIP_EVERY_S * per_site_s))  # a site's messages between raises
        sent: dict[str, int] = {}
        due: dict[str, int] = {}
        raised: dict[str, int] = {}
        hot: dict[str, str] = {}
        async with TelemetryProducer(settings.bootstrap, linger_ms=settings.producer_linger_ms) as producer:
            t_start = time.perf_counter()
            for m in range(n_total):
                sector, site, ids = layout[m % len(layout)]
                k = sent[site] = sent.get(site, -1) + 1
                # frames carry every sensor; single readings go through a site's sensors in turn
                values = dict.fromkeys(ids[:frame_size] if frame_size > 1 else [ids[k % len(ids)]], 3.0)
                target = ids[raised.get(site, 0) % len(ids)]
                if hot.get(site) in values:
                    values[hot.pop(site)] = 1.0
                elif site not in hot and k >= due.get(site, 0) and target in values:
                    values[target], hot[site] = 60.0, target
                    raised[site], due[site] = raised.get(site, 0) + 1, k + flip_every
                body: dict = {"site_id": site, "ts": int(time.time() * 1000)}
                if frame_size > 1:
                    body["readings"] = [{"sensor_id": s, "value": v} for s, v in values.items()]
                else:
                    [(body["sensor_id"], body["value"])] = values.items()
                await producer.send(prefix + f"telemetry.{sector}", site, orjson.dumps(body))
                delay = t_start + (m + 1) / rate_msgs - time.perf_counter()
                # Yield even when behind: a send that does not suspend would keep the reader from
                # stamping the hazards it has, and count the generator's backlog as latency.
                await asyncio.sleep(max(delay, 0))
            await producer.flush()
            offered.append(n_total / (time.perf_counter() - t_start))
        await asyncio.sleep(3)  # stragglers
    finally:
        reader.cancel()
        await consumer.stop()
    return latencies, offered[0] if offered else 0.0


def bench_database(settings: Settings) -> Settings:
    """Settings for the bench's own InfluxDB database, created afresh with the usual policies and no
    continuous queries: bench points stay out of inspectors' histories, and a roll-up of the main
    database (up to seconds of a core a minute at bench rates; InfluxDB's work, sized with InfluxDB)
    does not land in the middle of a measurement of the worker."""
    s = settings.model_copy(update={"influx_db": BENCH_DB, "influx_rollup_job": True})
    run(s, f'DROP DATABASE "{BENCH_DB}"')
    ensure_retention(s)
    return s


def drop_bench_database(settings: Settings) -> None:
    """Free what the bench wrote."""
    run(settings, f'DROP DATABASE "{BENCH_DB}"')


def latency_row(settings: Settings, prefix: str, layout, *, rate: int, seconds: float, frame_size: int) -> Row:
    """Telemetry → hazard latency through the running worker on `prefix`, at `rate` readings/s."""
    lat, sent = asyncio.run(
        latency_run(
            settings,
            prefix,
            layout,
            rate_readings=rate,
            seconds=seconds,
            frame_size=frame_size,
            out_topic=prefix + HAZARDS_TOPIC,
            raw=False,
        )
    )
    what = f"frames of {frame_size}" if frame_size > 1 else "single-reading messages"
    return Row(
        f"pipeline latency, telemetry→hazard, {what} @ {rate:,} readings/s",
        p50_ms=pct(lat, 50),
        p99_ms=pct(lat, 99),
        note=f"{len(lat)} samples, {sent * frame_size:,.0f} readings/s sent",
    )


def start_worker(settings: Settings, prefix: str, registry: Path, log: Path) -> subprocess.Popen:
    """A `safewatch worker` on the bench topics, its own group and metrics port, writing to `settings.influx_db`."""
    env = {
        **os.environ,
        "SAFEWATCH_TOPIC_PREFIX": prefix,
        "SAFEWATCH_REGISTRY": str(registry),
        "SAFEWATCH_WORKER_ID": f"{prefix}worker",
        "SAFEWATCH_BROKER_URL": settings.bootstrap,
        "SAFEWATCH_INFLUX_URL": settings.influx,
        "SAFEWATCH_INFLUX_DB": settings.influx_db,
        "SAFEWATCH_WORKER_WEB_PORT": str(settings.worker_web_port),
        "SAFEWATCH_FETCH_WAIT_MS": str(settings.fetch_wait_ms),
    }
    return spawn_safewatch(["worker"], log, env)


@dataclass
class Drain:
    """A worker draining preloaded topics: readings/s, and its own CPU seconds per million readings (/proc)."""

    rate: float
    cpu_per_million: float | None

    def note(self) -> str:
        """The table's note: CPU per million readings, if measured."""
        return f"worker CPU {self.cpu_per_million:.2f} s / M readings" if self.cpu_per_million else ""


def drain_rate(settings: Settings, proc: subprocess.Popen, total_readings: int, timeout: float = 300) -> Drain:
    """The worker's rate and CPU cost while it drains preloaded topics, from its Prometheus counter and /proc."""
    deadline = time.monotonic() + timeout
    first: tuple[float, float, float] | None = None  # (time, readings, CPU s) at the first reading seen
    last: tuple[float, float, float] | None = None  # ... at the last change
    last_n: float = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        n = worker_metrics(settings).get("safewatch_readings_total", 0)
        t, cpu = time.perf_counter(), cpu_seconds(proc.pid)
        if n > 0 and first is None:  # CPU before it (imports, joining the group) is start-up, not cost per reading
            first = (t, n, cpu)
        if n != last_n:
            last, last_n = (t, n, cpu), n
        if n >= total_readings:
            break
        # Each scrape costs the worker (and this process) CPU on the same 2 cores: poll gently.
        time.sleep(0.25)
    if first is None or last is None or last[0] <= first[0]:
        return Drain(0.0, None)
    readings = last[1] - first[1]
    return Drain(readings / (last[0] - first[0]), (last[2] - first[2]) / readings * 1e6)


def influx_ingest_row(settings: Settings, registry: Path, messages, frame_size: int) -> Row:
    """InfluxDB alone: the reading lines the worker would write for `messages`, through the worker's
    writer (chunks of `influx_batch_points`, `influx_write_concurrency` at once), into a scratch database."""
    engine = RuleEngine(load_registry(registry))
    pipeline = Pipeline(settings, engine, _no_send, None)
    idx, ts, values = [], [], []
    for _, _, value in messages:
        frame = orjson.loads(value)
        for r in frame["readings"] if frame_size > 1 else [frame]:
            idx.append(engine.index[r["sensor_id"]])
            ts.append(frame["ts"])
            values.append(float(r["value"]))
    lines = reading_lines(pipeline.prefixes, idx, ts, values, [True] * len(idx))
    scratch = settings.model_copy(update={"influx_db": INGEST_DB, "influx_rp": None})
    run(scratch, f'DROP DATABASE "{INGEST_DB}"')
    run(scratch, f'CREATE DATABASE "{INGEST_DB}"')

    async def write_all() -> float:
        writer = InfluxWriter(scratch)
        try:
            start = time.perf_counter()
            for k in range(0, len(lines), 100_000):
                await writer.write(lines[k : k + 100_000])
            return len(lines) / (time.perf_counter() - start)
        finally:
            await writer.aclose()

    try:
        rate = asyncio.run(write_all())
    finally:
        run(scratch, f'DROP DATABASE "{INGEST_DB}"')
    conns = settings.influx_write_concurrency
    return Row(f"InfluxDB alone, the same reading lines ({conns} writes at once)", None, rate, note="lines/s")


async def _no_send(topic: str, key: bytes, value: bytes) -> None:
    return None


def quix_row(settings: Settings, python: Path, prefix: str, messages) -> Row:
    """The same single-reading messages through a Quix Streams app (decode + threshold), on fresh topics."""
    import json

    from . import quix_peer

    ensure_topics(settings, {telemetry_topic(s, prefix): {} for s in SECTORS})
    asyncio.run(produce_all(settings, prefix, messages))
    topics = ",".join(telemetry_topic(s, prefix) for s in SECTORS)
    argv = [str(python), quix_peer.__file__, settings.bootstrap, f"{prefix}group", topics, str(len(messages)), "25"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        return Row("Quix Streams, single-reading messages", note=f"failed: {done.stderr.strip()[-200:]}")
    rate = json.loads(lines[-1])["per_s"]
    return Row("Quix Streams app, single-reading messages (decode + threshold)", rate, rate)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_bench(
    settings: Settings,
    *,
    readings: int,
    frame_size: int,
    rate: int,
    latency_seconds: float,
    peak_rate: int = 50_000,
    single_rate: int = 20_000,
    quix_python: Path | None = None,
) -> list[Row]:
    """Run all phases and print the table."""
    stack_up(settings)
    settings = bench_database(settings)  # (a failed run's is dropped by the next one)
    rng = np.random.default_rng(1)
    run_id = time.strftime("%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="safewatch-bench-"))
    registry = work / "registry.yaml"
    layout = bench_registry(registry, sites=200)
    logs = settings.state_dir / "logs"
    rows: list[Row] = []
    n_frames = readings // frame_size
    # SAFEWATCH_INFLUX_WRITE_READINGS=false reaches the bench's workers through the environment.
    doing = "rules + InfluxDB" if settings.influx_write_readings else "rules, readings write off"
    t0 = int(time.time() * 1000) - 3_600_000

    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("raw broker: produce + consume", total=4)
            raw_prefix = f"bench-{run_id}-raw."
            ensure_topics(settings, {telemetry_topic(s, raw_prefix): {} for s in SECTORS})
            msgs = frames(layout, n_frames, frame_size, t0_ms=t0, rng=rng)
            p_rate = asyncio.run(produce_all(settings, raw_prefix, msgs))
            c_rate = asyncio.run(consume_all(settings, [telemetry_topic(s, raw_prefix) for s in SECTORS], len(msgs)))
            rows.append(Row("raw aiokafka produce (frames)", p_rate, p_rate * frame_size))
            rows.append(Row("raw aiokafka consume, getmany (frames)", c_rate, c_rate * frame_size))
            lat_raw, _ = asyncio.run(
                latency_run(
                    settings,
                    raw_prefix,
                    layout,
                    rate_readings=rate,
                    seconds=latency_seconds,
                    frame_size=frame_size,
                    out_topic=raw_prefix + "telemetry.hazchem",
                    raw=True,
                )
            )
            rows.append(
                Row(
                    f"raw produce→consume latency @ {rate:,} readings/s",
                    p50_ms=pct(lat_raw, 50),
                    p99_ms=pct(lat_raw, 99),
                    note=f"{len(lat_raw)} samples",
                )
            )
            progress.advance(task)

            progress.update(task, description="InfluxDB alone: the same reading lines")
            ingest = influx_ingest_row(settings, registry, msgs, frame_size)
            rows.append(ingest)
            progress.update(task, description=f"pipeline: {n_frames:,} frames of {frame_size}")
            fr_prefix = f"bench-{run_id}-frames."
            ensure_topics(settings, topic_specs(settings.model_copy(update={"topic_prefix": fr_prefix})))
            asyncio.run(produce_all(settings, fr_prefix, msgs))
            worker = start_worker(settings, fr_prefix, registry, logs / "bench-worker.log")
            try:
                drained = drain_rate(settings, worker, n_frames * frame_size)
                rows.append(
                    Row(
                        f"pipeline, frames of {frame_size} ({doing})",
                        drained.rate / frame_size,
                        drained.rate,
                        note=(
                            f"{drained.rate / (ingest.readings_per_s or 1):.0%} of InfluxDB alone · {drained.note()}"
                            if settings.influx_write_readings
                            else drained.note()
                        ),
                    )
                )
                progress.advance(task)
                for r in [rate] + ([peak_rate] if peak_rate else []):
                    progress.update(task, description=f"pipeline latency @ {r:,} readings/s")
                    rows.append(
                        latency_row(settings, fr_prefix, layout, rate=r, seconds=latency_seconds, frame_size=frame_size)
                    )
            finally:
                stop_process(worker)
            progress.advance(task)

            # Long enough that the 0.25 s polls of the drain and the start-up do not weigh on the rate.
            n_single = max(1, min(readings // 2, 200_000))
            progress.update(task, description=f"pipeline: {n_single:,} single-reading messages")
            one_prefix = f"bench-{run_id}-single."
            ensure_topics(settings, topic_specs(settings.model_copy(update={"topic_prefix": one_prefix})))
            singles = frames(layout, n_single, 1, t0_ms=t0, rng=rng)
            asyncio.run(produce_all(settings, one_prefix, singles))
            worker = start_worker(settings, one_prefix, registry, logs / "bench-worker.log")
            try:
                drained = drain_rate(settings, worker, n_single)
                rows.append(
                    Row(f"pipeline, single-reading messages ({doing})", drained.rate, drained.rate, note=drained.note())
                )
                if single_rate:
                    progress.update(task, description=f"pipeline latency @ {single_rate:,} single-reading messages/s")
                    rows.append(
                        latency_row(
                            settings, one_prefix, layout, rate=single_rate, seconds=latency_seconds, frame_size=1
                        )
                    )
            finally:
                stop_process(worker)
            progress.advance(task)

            if quix_python is not None:
                progress.update(task, description=f"Quix Streams: {n_single:,} single-reading messages")
                rows.append(quix_row(settings, quix_python, f"bench-{run_id}-quix.", singles))

    finally:
        # Also after a failed phase: the embedded broker keeps every topic for its lifetime.
        drop_bench_database(settings)
        delete_topics(settings, f"bench-{run_id}-")
    print_rows(rows, raw_readings=rows[1].readings_per_s, settings=settings)
    return rows


def run_storage_bench(settings: Settings, *, messages: int, frame_size: int) -> list[Row]:
    """Raw produce and consume of the same frames on a memory-storage and an s3-storage broker, one run."""
    import socket

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    rng = np.random.default_rng(1)
    work = Path(tempfile.mkdtemp(prefix="safewatch-bench-storage-"))
    layout = bench_registry(work / "registry.yaml", sites=200)
    msgs = frames(layout, messages, frame_size, t0_ms=int(time.time() * 1000) - 3_600_000, rng=rng)
    rows: list[Row] = []
    for storage in ("memory", "s3"):
        # A broker of its own per engine, on free ports, so a running demo stack is neither used nor disturbed.
        s = settings.model_copy(
            update={
                "state_dir": work / storage,
                "broker_storage": storage,
                "broker_s3_endpoint": None,
                "broker_url": None,
                "broker_port": free_port(),
                "influx_port": free_port(),
                "objectstore_port": free_port(),
            }
        )
        console.print(f"{storage} storage: {messages:,} frames of {frame_size} …")
        stack_up(s)
        try:
            ensure_topics(s, {telemetry_topic(sec, "bench-storage."): {} for sec in SECTORS})
            p_rate = asyncio.run(produce_all(s, "bench-storage.", msgs))
            c_rate = asyncio.run(consume_all(s, [telemetry_topic(sec, "bench-storage.") for sec in SECTORS], len(msgs)))
        finally:
            stack_down(s)
        rows.append(Row(f"raw produce, {storage} storage (frames)", p_rate, p_rate * frame_size))
        rows.append(Row(f"raw consume, {storage} storage (frames)", c_rate, c_rate * frame_size))
    print_rows(rows, raw_readings=rows[1].readings_per_s, settings=settings, title="one run, a broker per storage")
    return rows


def print_rows(
    rows: list[Row], *, raw_readings: float | None, settings: Settings, title: str = "one run, same broker"
) -> None:
    """The side-by-side table."""
    table = Table(title=f"safewatch bench ({title})")
    for col in ("path", "msgs/s", "readings/s", "vs raw consume", "p50 ms", "p99 ms", "note"):
        table.add_column(col, justify="left" if col in ("path", "note") else "right")

    def f(x, fmt="{:,.0f}"):
        return fmt.format(x) if x is not None else "-"

    for r in rows:
        ratio = f"{r.readings_per_s / raw_readings:.1%}" if r.readings_per_s and raw_readings else "-"
        table.add_row(
            r.path,
            f(r.messages_per_s),
            f(r.readings_per_s),
            ratio,
            f(r.p50_ms, "{:.1f}"),
            f(r.p99_ms, "{:.1f}"),
            r.note,
        )
    console.print(table)
    console.print(
        f"fetch wait {settings.fetch_wait_ms} ms · batches ≤ {settings.take_max} msgs · "
        f"producer linger {settings.producer_linger_ms} ms · "
        f"{os.cpu_count()} cores shared by broker, InfluxDB, load and worker"
    )
