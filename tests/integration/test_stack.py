"""The embedded stack against the real Tansu and InfluxDB processes (no fakes)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from config.settings import Settings
from safewatch.stack import (
    BROKER,
    INFLUXDB,
    MOSQUITTO,
    StackError,
    delete_topics,
    delete_topics_async,
    ensure_topics,
    ensure_topics_async,
    install_influxdb,
    stack_status,
    stack_up,
)


def test_install_finds_the_installed_influxd() -> None:
    # The machine's setup step installed Debian's package; install must then change nothing.
    path = install_influxdb()
    assert path == shutil.which("influxd")
    assert os.access(path, os.X_OK)


def _pids(settings: Settings) -> dict[str, int | None]:
    return {part.name: part.pid for part in stack_status(settings)}


def test_influxdb_answers_ping_and_has_the_database(stack: Settings) -> None:
    ping = httpx.get(f"{stack.influx}/ping", timeout=5)
    assert ping.status_code == 204
    assert ping.headers["X-Influxdb-Version"].startswith("1.")

    shown = httpx.get(f"{stack.influx}/query", params={"q": "SHOW DATABASES"}, timeout=5).json()
    names = [row[0] for row in shown["results"][0]["series"][0]["values"]]
    assert stack.influx_db in names


def test_influxdb_accepts_a_write_and_returns_it(stack: Settings) -> None:
    measurement = f"probe_{uuid.uuid4().hex[:8]}"
    at = int(time.time())  # inside the default policy `raw`, which keeps only recent points
    written = httpx.post(
        f"{stack.influx}/write",
        params={"db": stack.influx_db, "precision": "s"},
        content=f"{measurement},site=s1 value=42.5 {at}\n",
        timeout=5,
    )
    assert written.status_code == 204, written.text
    rows = httpx.get(
        f"{stack.influx}/query",
        params={"db": stack.influx_db, "q": f'SELECT value FROM "{measurement}"', "epoch": "s"},
        timeout=5,
    ).json()
    assert rows["results"][0]["series"][0]["values"] == [[at, 42.5]]


@pytest.mark.asyncio
async def test_message_produced_is_consumed_back(stack: Settings) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    assert await ensure_topics_async(stack, {topic: {}}) == [topic]
    sent = {f"site-{i}".encode(): f"reading {i}".encode() for i in range(20)}

    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=stack.producer_linger_ms)
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()

    # No consumer group: Tansu's group join takes about half the session timeout.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=stack.fetch_wait_ms,
    )
    await consumer.start()
    got: dict[bytes, bytes] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(stack.partitions)])
        async with asyncio.timeout(20):
            while len(got) < len(sent):
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got.update((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    assert got == sent


@pytest.mark.asyncio
async def test_ensure_topics_is_idempotent_and_keeps_configs(stack: Settings) -> None:
    compacted = f"test.compact.{uuid.uuid4().hex[:8]}"
    plain = f"test.plain.{uuid.uuid4().hex[:8]}"
    topics = {compacted: {"cleanup.policy": "compact"}, plain: {}}
    # The sync wrapper as the command line calls it: no event loop in its thread.
    assert sorted(await asyncio.to_thread(ensure_topics, stack, topics)) == sorted(topics)
    # Again, from inside a running loop (the wrapper's other branch), and the coroutine itself.
    assert ensure_topics(stack, topics) == []
    assert await ensure_topics_async(stack, topics) == []

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        meta = await admin.describe_topics([compacted, plain])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, compacted)])
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in meta} == {compacted: stack.partitions, plain: stack.partitions}
    entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
    assert entries.get("cleanup.policy") == "compact"


@pytest.mark.asyncio
async def test_delete_topics_takes_only_those_under_the_prefix(stack: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    mine = [f"bench-{run}-a.one", f"bench-{run}-a.two"]
    other = f"bench-{run}x.keep"
    await ensure_topics_async(stack, {name: {} for name in [*mine, other]})
    assert sorted(await asyncio.to_thread(delete_topics, stack, f"bench-{run}-")) == sorted(mine)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        left = await admin.list_topics()
    finally:
        await admin.close()
    assert other in left and not set(mine) & set(left)
    assert await delete_topics_async(stack, f"bench-{run}-") == []
    with pytest.raises(ValueError):
        await delete_topics_async(stack, "")


def test_status_reports_every_part_healthy(stack: Settings) -> None:
    parts = {part.name: part for part in stack_status(stack)}
    assert set(parts) == {BROKER, INFLUXDB, MOSQUITTO}
    assert parts[MOSQUITTO].healthy and parts[MOSQUITTO].address == f"mqtt://127.0.0.1:{stack.mqtt_port}"
    broker, influx = parts[BROKER], parts[INFLUXDB]
    assert broker.healthy and influx.healthy
    assert broker.address == stack.bootstrap
    assert influx.address == stack.influx
    assert broker.pid and influx.pid and broker.pid != influx.pid
    assert "memory storage" in broker.note
    for part in parts.values():
        assert (stack.state_dir / "run" / f"{part.name}.pid").read_text().strip() == str(part.pid)
        assert part.log is not None and part.log.is_file()


def test_stack_up_again_changes_nothing(stack: Settings) -> None:
    before = _pids(stack)
    after = {part.name: part.pid for part in stack_up(stack)}
    assert after == before
    assert all(part.healthy for part in stack_status(stack))


def test_a_port_held_by_another_process_is_named(stack: Settings, tmp_path) -> None:
    # A second stack from another state dir on the same broker port must refuse, not adopt it.
    other = stack.model_copy(update={"state_dir": tmp_path / "other"})
    with pytest.raises(StackError, match=rf"port {stack.broker_port}\b"):
        stack_up(other)
    assert not list((tmp_path / "other" / "run").glob("*.pid"))
    assert _pids(stack)[BROKER] is not None
