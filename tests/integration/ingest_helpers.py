"""Helpers of the ingest gateway tests: tokens issued by the real CLI, a real gateway process, Kafka read back."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from config.settings import Settings
from ingest.mqtt import forget_session
from safewatch.mosquitto import gateway_password
from safewatch.processes import settings_env, spawn_safewatch, stop_process

# Two enterprises of the shipped registry, each with a site and a sensor of its own.
ENT_A, SITE_A, SENSOR_A = "913205828486022959", "hz-zjg-tank01", "hz-zjg-tank01-t101-gas01"
ENT_B, SITE_B, SENSOR_B = "913201157410322022", "mn-jn-tailings01", "mn-jn-tailings01-pond-level01"


def now_ms() -> int:
    return int(time.time() * 1000)


def frame(site: str = SITE_A, sensor: str = SENSOR_A, ts: int | None = None, value: float = 1.5, **extra) -> dict:
    return {"site_id": site, "ts": ts or now_ms(), "readings": [{"sensor_id": sensor, "value": value}], **extra}


def safewatch_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    """Run `safewatch ARGS` as an operator would, with these settings in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "safewatch", *args],
        env=settings_env(settings, dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def issue_token(settings: Settings, enterprise: str, name: str = "test gateway") -> tuple[str, str]:
    """(token id, secret) from `safewatch enterprise token issue`."""
    done = safewatch_cli(settings, "enterprise", "token", "issue", enterprise, "--name", name)
    assert done.returncode == 0, done.stderr
    token_id = done.stderr.split("issued ", 1)[1].split()[0]
    return token_id, done.stdout.strip()


# What README and docs/ingest.md promise: a revoked token is refused by every gateway within this.
REVOKED_WITHIN_S = 2.0


def refused_within(gateway: Gateway, secret: str, seconds: float, body: bytes | None = None) -> bool:
    """True once the gateway answers 401 to this token, if within `seconds` of now."""
    deadline = time.monotonic() + seconds
    body = body or orjson.dumps(frame())
    while True:
        if gateway.post(secret, body).status_code == 401:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def retire_session(settings: Settings) -> None:
    """Discard the MQTT session of a test's gateway client id, which no gateway comes back for;
    its share group would otherwise be sent a copy of every later test's messages."""
    with ThreadPoolExecutor(1) as pool:  # callable from a test that runs an event loop itself
        pool.submit(asyncio.run, forget_session(settings, gateway_password(settings))).result(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A `safewatch gateway` process of its own (SIGKILL-able), on a free port."""

    def __init__(
        self, settings: Settings, log: Path, *args: str, scheme: str = "http", verify: ssl.SSLContext | bool = True
    ):
        self.settings = settings
        self.url = f"{scheme}://{settings.ingest_host}:{settings.ingest_port}"
        self.proc = spawn_safewatch(["gateway", *args], log, settings_env(settings, dict(os.environ)))
        self.log = log
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited; see {log}:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        stop_process(self.proc)  # a gateway that never answered must not outlive the test
        raise AssertionError(f"gateway did not answer; see {log}")

    def post(self, token: str | None, body: bytes | str, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = body.encode() if isinstance(body, str) else body
        return httpx.post(f"{self.url}/v1/telemetry", content=content, headers=headers, timeout=30)

    def post_json(self, token: str, obj: object) -> httpx.Response:
        return self.post(token, orjson.dumps(obj), **{"Content-Type": "application/json"})

    def feed(self, token: str) -> httpx.Response:
        return httpx.get(f"{self.url}/v1/feed", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc)


def gateway_settings(stack: Settings, **update: object) -> Settings:
    """The stack's settings with a fresh topic prefix, InfluxDB database and gateway port (and any changes).

    The database is the test's own: feed counts are stored there, and another test's would add up."""
    run = uuid.uuid4().hex[:6]
    base = {"topic_prefix": f"it-ingest-{run}.", "ingest_port": free_port(), "influx_db": f"it_ingest_{run}"}
    settings = stack.model_copy(update={**base, **update})
    created = httpx.post(f"{settings.influx}/query", data={"q": f'CREATE DATABASE "{settings.influx_db}"'})
    assert created.status_code == 200 and "error" not in created.text, created.text
    return settings


async def read_topic(settings: Settings, topic: str, count: int, timeout: float = 20.0) -> list[tuple[str, dict]]:
    """The first `count` messages of a topic (all partitions) as (key, JSON value); fewer if the time runs out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[str, dict]] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # a topic just created
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend((r.key.decode() if r.key else "", orjson.loads(r.value)) for r in records)
    finally:
        await consumer.stop()
    return out
