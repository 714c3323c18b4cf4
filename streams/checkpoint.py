"""Rule-state checkpoints: one compacted-topic record per site, written per batch, and which
telemetry partition each site belongs to (a worker restores only the sites of its partitions).

Restore reads the topic from the start until it meets a fence record it wrote itself a
moment before, in every partition. It never trusts the broker's end offsets: the embedded
broker (Tansu 0.6.0) reports a partition's end as the start of its last batch + 1, and a
restore that stopped there was seen to miss the newest records (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from config.settings import Settings
from config.topics import SECTORS, telemetry_topic
from sensors.producer import kafka_partition

log = logging.getLogger(__name__)
FENCE_KEY = b"__fence__"


async def load_snapshots(settings: Settings, topic: str, *, timeout_s: float = 60.0) -> dict[str, dict]:
    """Newest snapshot per site from the checkpoint topic, read up to a fresh fence."""
    fence = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        for p in partitions:
            await producer.send_and_wait(topic, key=FENCE_KEY, value=fence, partition=p)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=settings.fetch_wait_ms
    )
    await consumer.start()
    latest: dict[bytes, bytes] = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"checkpoint restore: no fence seen in {sorted(p.partition for p in pending)} "
                    f"of {topic} after {timeout_s:.0f} s"
                )
            fetched = await consumer.getmany(*pending, timeout_ms=500)
            for tp, msgs in fetched.items():
                for m in msgs:
                    if m.key == FENCE_KEY:
                        if m.value == fence:
                            pending.discard(tp)
                            break
                    elif m.key is not None and m.value is not None:
                        latest[m.key] = m.value
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return {k.decode(): orjson.loads(v) for k, v in latest.items()}


async def sites_by_partition(settings: Settings, site_sector: Mapping[str, str]) -> dict[tuple[str, int], list[str]]:
    """Which telemetry partition each site's messages land on (Kafka's default partitioner over the key)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    try:
        counts = {s: len(await producer.partitions_for(settings.topic(telemetry_topic(s)))) for s in SECTORS}
    finally:
        await producer.stop()
    out: dict[tuple[str, int], list[str]] = {}
    for site, sector in site_sector.items():
        tp = (settings.topic(telemetry_topic(sector)), kafka_partition(site.encode(), counts[sector]))
        out.setdefault(tp, []).append(site)
    return out


async def commit_done(
    consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], done: dict[TopicPartition, int], who: str
) -> None:
    """Commit offsets whose batches are done and checkpointed (those still assigned), then forget
    those of `done` that went. A refused commit is logged: the group moved on, and the new owner
    re-reads from the last commit and knows the checkpointed part for redelivered."""
    mine = consumer.assignment()
    offsets = {tp: off for tp, off in offsets.items() if tp in mine}
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("%s: offset commit refused (%s); the partitions' new owner starts from the last commit", who, exc)
    for tp, off in offsets.items():
        if done.get(tp) == off:
            del done[tp]
