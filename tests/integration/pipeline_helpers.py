"""Run real safewatch processes and read real topics for the integration tests.

The broker helpers are coroutines: await them from `@pytest.mark.asyncio` tests and
`pytest_asyncio` fixtures. Spawning and stopping a child process stay synchronous.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from config.settings import Settings
from sensors.producer import TelemetryProducer


def env_of(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process use exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
    for k, v in settings.model_dump().items():
        if v is not None:
            env[f"SAFEWATCH_{k.upper()}"] = str(v)
    return env


def spawn(settings: Settings, log: Path, *args: str) -> subprocess.Popen:
    """`python -m safewatch ARGS` with these settings, output to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "safewatch", *args],
        env=env_of(settings),
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a child; SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def produce(settings: Settings, messages: list[tuple[str, str, bytes]]) -> None:
    """Send (topic, key, value) triples to the prefixed topics and wait for delivery."""
    async with TelemetryProducer(settings.bootstrap, linger_ms=5) as producer:
        for topic, key, value in messages:
            await producer.send(settings.topic(topic), key, value)
        await producer.flush()


async def read_topic(
    settings: Settings, name: str, *, until=lambda msgs: False, timeout: float = 60, settle: float = 2.0
) -> list[dict]:
    """Everything on a topic from the start, decoded; stops when `until(msgs)` holds and
    nothing new came for `settle` seconds, or at `timeout`."""
    c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    try:
        topic = settings.topic(name)
        parts = await _partitions(c, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out, last_new = [], time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=200)
            for msgs in got.values():
                out.extend(orjson.loads(m.value) for m in msgs)
                if msgs:
                    last_new = time.monotonic()
            if until(out) and time.monotonic() - last_new >= settle:
                break
        return out
    finally:
        await c.stop()


async def _partitions(consumer, topic: str) -> list[int]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no partitions")


async def metric(settings: Settings, name: str) -> float:
    """A worker counter summed over labels; 0 when the worker is not serving yet."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            text = (await client.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics")).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def wait_until(check, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll the sync `check` until true; fail naming `what` (for sync tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def wait_for(read, timeout: float, what: str, *, at_least: float | None = None, interval: float = 0.2) -> None:
    """Poll `read()` (a value or an awaitable of one) without blocking the event loop until it
    is true, or, with `at_least`, until it reaches that; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = read()
        if inspect.isawaitable(value):
            value = await value
        if (value >= at_least) if at_least is not None else value:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last read {value!r})")


async def committed(settings: Settings, topics: list[str]) -> int:
    """Sum of the worker group's committed offsets over `topics` (prefixed names)."""
    c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.worker_id, enable_auto_commit=False)
    await c.start()
    try:
        total = 0
        for topic in topics:
            for p in await _partitions(c, topic):
                total += await c.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await c.stop()
