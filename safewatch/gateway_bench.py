"""`safewatch bench --gateway`: one gateway process's HTTP frames/s and MQTT messages/s beside the raw produce limit.

All in one run on the configured stack, on fresh topics:
1. raw: the same frames sent straight to Kafka by the gateway's own producer path (`send_many`, acks=all);
2. HTTP: NDJSON requests of many frames, several in flight, to one `safewatch gateway`; every 202 is checked;
3. MQTT: `mosquitto_pub -l` (QoS 1), one publisher per enterprise, until the gateway has forwarded them all.
Accept → Kafka percentiles come from the gateway's own histogram (bucket upper bounds), and for HTTP
also from the client's request times. It is a benchmark: it reports what it saw and asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from ingest.mqtt import forget_session
from ingest.token_topic import publish
from ingest.tokens import TokenTable, new_token, revoked
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry
from streams.worker import topic_specs

from .bench import Row, bench_registry, console, frames, pct, print_rows
from .mosquitto import gateway_password, sync_auth
from .processes import cpu_seconds, settings_env, spawn_safewatch, stop_process
from .stack import delete_topics, ensure_topics, stack_up, which


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def raw_produce(settings: Settings, messages: list[tuple[str, str, bytes]], chunk: int) -> float:
    """Frames/s straight to Kafka, in chunks as the gateway sends them (send_many, acks=all)."""
    async with TelemetryProducer(settings.bootstrap, linger_ms=settings.producer_linger_ms, acks="all") as producer:
        start = time.perf_counter()
        for i in range(0, len(messages), chunk):
            await producer.send_many([(settings.topic_prefix + t, k, v) for t, k, v in messages[i : i + chunk]])
        return len(messages) / (time.perf_counter() - start)


async def http_load(url: str, bodies: list[tuple[str, bytes, int]], concurrency: int) -> tuple[float, list[float], int]:
    """POST every (token, body, frames) with `concurrency` in flight; (frames/s, request ms, frames accepted)."""
    latencies: list[float] = []
    accepted = 0
    queue = list(reversed(bodies))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while queue:
            token, body, _ = queue.pop()
            t = time.perf_counter()
            r = await client.post(
                f"{url}/v1/telemetry",
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
            )
            latencies.append((time.perf_counter() - t) * 1000)
            if r.status_code == 202:
                accepted += r.json()["accepted"]

    async with httpx.AsyncClient(timeout=120) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return sum(n for _, _, n in bodies) / elapsed, latencies, accepted


def gateway_metrics(url: str) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]]]:
    """(items forwarded per via, accept → Kafka histogram buckets per via as (upper bound s, cumulative count))."""
    items: dict[str, float] = defaultdict(float)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "safewatch_ingest_items_total":
                items[s.labels["via"]] += s.value
            elif s.name == "safewatch_ingest_forward_seconds_bucket":
                buckets[s.labels["via"]].append((float(s.labels["le"]), s.value))
    return dict(items), dict(buckets)


def bucket_pct(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the q-th percentile."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le * 1000 for le, n in sorted(buckets) if n >= total * q / 100)


def run_gateway_bench(
    settings: Settings, *, frames_total: int, frame_size: int, request_frames: int, concurrency: int, mqtt_total: int
) -> list[Row]:
    """Run the three phases and print the table."""
    stack_up(settings)
    run_id = time.strftime("%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="safewatch-gwbench-"))
    layout = bench_registry(work / "registry.yaml", sites=40)
    registry = load_registry(work / "registry.yaml")
    s = settings.model_copy(
        update={
            "topic_prefix": f"bench-{run_id}-gw.",
            "registry": work / "registry.yaml",
            "ingest_port": free_port(),
            "mqtt_client_id": f"bench-{run_id}",
            "mqtt_share_group": f"bench{run_id}",
            "ingest_rate_per_s": 1e9,
            "ingest_max_items": max(request_frames, 1),
            "ingest_max_body_bytes": 256 * 1024 * 1024,
            "ingest_max_inflated_bytes": 256 * 1024 * 1024,
        }
    )
    ensure_topics(s, topic_specs(s))
    rng = np.random.default_rng(1)
    t0 = int(time.time() * 1000) - 3_600_000
    msgs = frames(layout, frames_total, frame_size, t0_ms=t0, rng=rng)
    rows: list[Row] = []

    console.print(f"raw produce: {len(msgs):,} frames of {frame_size} readings …")
    raw = asyncio.run(raw_produce(s, msgs, request_frames))
    rows.append(Row("raw produce, send_many acks=all (frames)", raw, raw * frame_size))

    tokens = {e: new_token(e, f"bench {run_id}") for e in registry.enterprises}
    asyncio.run(publish(s, [tok for tok, _ in tokens.values()]))
    table = TokenTable()
    for tok, _ in tokens.values():
        table.apply(tok)
    sync_auth(s, table)
    log = s.state_dir / "logs" / f"gateway-bench-{run_id}.log"
    proc = spawn_safewatch(["gateway", "--loglevel", "warning"], log, settings_env(s, dict(os.environ)))
    url = f"http://{s.ingest_host}:{s.ingest_port}"
    try:
        _wait_up(url, proc, log)
        by_ent: dict[str, list[bytes]] = defaultdict(list)
        for _, site, value in msgs:
            by_ent[registry.sites[site].enterprise_id].append(value)
        bodies = [
            (tokens[e][1], b"\n".join(vals[i : i + request_frames]), len(vals[i : i + request_frames]))
            for e, vals in by_ent.items()
            for i in range(0, len(vals), request_frames)
        ]
        console.print(f"HTTP: {len(msgs):,} frames in {len(bodies)} requests, {concurrency} in flight …")
        rate, lat, accepted = asyncio.run(http_load(url, bodies, concurrency))
        _, buckets = gateway_metrics(url)
        rows.append(
            Row(
                f"gateway HTTP, {request_frames} frames/request (frames)",
                rate,
                rate * frame_size,
                pct(lat, 50),
                pct(lat, 99),
                f"{accepted:,}/{len(msgs):,} accepted; request time; accept→Kafka p99 ≤ "
                f"{bucket_pct(buckets.get('http', []), 99) or 0:g} ms",
            )
        )
        console.print(f"MQTT: {mqtt_total:,} frames, QoS 1, one mosquitto_pub per enterprise …")
        cpu0 = cpu_seconds(proc.pid)
        rate, n = _mqtt_load(s, url, layout, registry, tokens, mqtt_total, frame_size, t0, work)
        # The gateway's own CPU per message is what transfers to a machine where it has a core to itself.
        cpu_us = (cpu_seconds(proc.pid) - cpu0) / max(n, 1) * 1e6
        _, buckets = gateway_metrics(url)
        mq = buckets.get("mqtt", [])
        rows.append(
            Row(
                "gateway MQTT, QoS 1 (messages = frames)",
                rate,
                rate * frame_size,
                bucket_pct(mq, 50),
                bucket_pct(mq, 99),
                f"{n:,}/{mqtt_total:,} forwarded; gateway CPU {cpu_us:.0f} µs/message "
                f"(≈{1e6 / max(cpu_us, 1e-9):,.0f}/s on a core of its own); p50/p99: accept→Kafka bucket bounds",
            )
        )
        # Latency at a steady load well under the limits: what a plant sees in normal operation.
        seconds, http_rate, mqtt_rate = 10, 5_000, 2_000
        e0 = next(iter(by_ent))
        paced = [b"\n".join(by_ent[e0][i : i + 50]) for i in range(0, 50 * int(http_rate / 50 * seconds), 50)]
        paced = [b for b in paced if b]
        _, before = gateway_metrics(url)
        lat = asyncio.run(http_paced(url, tokens[e0][1], paced, http_rate / 50))
        _, after = gateway_metrics(url)
        hb = bucket_delta(after.get("http", []), before.get("http", []))
        rows.append(
            Row(
                f"gateway HTTP latency @ {http_rate:,} frames/s, 50/request",
                p50_ms=pct(lat, 50),
                p99_ms=pct(lat, 99),
                note=f"request time, {len(lat)} requests; accept→Kafka p99 ≤ {bucket_pct(hb, 99) or 0:g} ms",
            )
        )
        site = next(site for _, site, _ in msgs if registry.sites[site].enterprise_id == e0)
        payloads = [v for _, st, v in msgs if st == site][: mqtt_rate * seconds]
        payloads = (payloads * (mqtt_rate * seconds // max(len(payloads), 1) + 1))[: mqtt_rate * seconds]
        before = after
        mqtt_topic = f"safewatch/{e0}/{site}/telemetry"
        asyncio.run(mqtt_paced(s, tokens[e0][0].token_id, tokens[e0][1], mqtt_topic, payloads, mqtt_rate))
        time.sleep(1.0)
        _, after = gateway_metrics(url)
        mb = bucket_delta(after.get("mqtt", []), before.get("mqtt", []))
        rows.append(
            Row(
                f"gateway MQTT latency @ {mqtt_rate:,} msgs/s",
                p50_ms=bucket_pct(mb, 50),
                p99_ms=bucket_pct(mb, 99),
                note=f"accept→Kafka bucket bounds, {int(mb[-1][1]) if mb else 0} messages",
            )
        )
    finally:
        stop_process(proc)
        # The bench's client id never comes back: drop its session, or its share group would
        # queue a copy of every message later runs publish.
        asyncio.run(forget_session(s, gateway_password(s)))
        gone = [revoked(tok) for tok, _ in tokens.values()]
        asyncio.run(publish(s, gone))
        for tok in gone:
            table.apply(tok)
        sync_auth(s, table)
    delete_topics(settings, f"bench-{run_id}-")
    print_rows(rows, raw_readings=raw * frame_size, settings=s, title="one gateway process, same broker")
    console.print(f"frames of {frame_size} readings; the 'vs raw' column compares with the raw produce row")
    return rows


async def http_paced(url: str, token: str, bodies: list[bytes], per_s: float) -> list[float]:
    """One request every 1/per_s seconds (each its own task); the request times in ms."""
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, body: bytes) -> None:
        t = time.perf_counter()
        await client.post(
            f"{url}/v1/telemetry",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
        )
        latencies.append((time.perf_counter() - t) * 1000)

    async with httpx.AsyncClient(timeout=60) as client:
        start = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / per_s - time.perf_counter()))
            tasks.append(asyncio.create_task(one(client, body)))
        await asyncio.gather(*tasks)
    return latencies


async def mqtt_paced(s: Settings, user: str, password: str, topic: str, payloads: list[bytes], per_s: float) -> None:
    """Publish QoS 1 at a steady rate with gmqtt (a plant that is not flooding)."""
    from gmqtt import Client
    from gmqtt.mqtt.constants import MQTTv311

    client = Client(f"bench-plant-{time.monotonic_ns()}")
    client.set_auth_credentials(user, password)
    await client.connect(s.mqtt_host, s.mqtt_port, version=MQTTv311)
    start = time.perf_counter()
    for i, payload in enumerate(payloads):
        if i % 20 == 0:
            await asyncio.sleep(max(0.0, start + i / per_s - time.perf_counter()))
        client.publish(topic, payload, qos=1)
    await asyncio.sleep(1.0)
    await client.disconnect()


def bucket_delta(after: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Histogram buckets of what happened between two reads."""
    old = dict(before)
    return [(le, n - old.get(le, 0.0)) for le, n in after]


def _wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                time.sleep(1.0)  # let its MQTT subscription settle
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not answer; see {log}")


def _mqtt_load(s, url, layout, registry, tokens, total, frame_size, t0, work) -> tuple[float, int]:
    """mosquitto_pub -l per enterprise (its first site); returns (messages/s forwarded, messages forwarded)."""
    pub = which("mosquitto_pub")
    if pub is None:
        raise RuntimeError("mosquitto_pub is not installed: run `safewatch stack install`")
    rng = np.random.default_rng(2)
    firsts: dict[str, tuple] = {}
    for entry in layout:
        firsts.setdefault(registry.sites[entry[1]].enterprise_id, entry)
    per = total // len(firsts)
    # One site per publisher: its frames span `per` ticks at most, all in the past (the gateway refuses the future).
    t0 = int(time.time() * 1000) - (per + 60) * 1000
    before, _ = gateway_metrics(url)
    procs = []
    start = time.perf_counter()
    for e, entry in firsts.items():
        lines = work / f"mqtt-{e}.ndjson"
        lines.write_bytes(b"\n".join(v for _, _, v in frames([entry], per, frame_size, t0_ms=t0, rng=rng)) + b"\n")
        token_id, secret = tokens[e][0].token_id, tokens[e][1]
        topic = f"safewatch/{e}/{entry[1]}/telemetry"
        argv = [pub, "-h", s.mqtt_host, "-p", str(s.mqtt_port), "-q", "1", "-M", "2000"]
        argv += ["-u", token_id, "-P", secret, "-t", topic, "-l"]
        procs.append(subprocess.Popen(argv, stdin=open(lines, "rb"), stdout=subprocess.DEVNULL))  # noqa: SIM115
    expected = per * len(firsts) + before.get("mqtt", 0)
    deadline = time.monotonic() + 300
    done = 0.0
    while time.monotonic() < deadline:
        done = gateway_metrics(url)[0].get("mqtt", 0)
        if done >= expected:
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.wait(timeout=60)
    n = int(done - before.get("mqtt", 0))
    return n / elapsed, n
