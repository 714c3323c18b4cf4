"""Enterprise tokens on a compacted Kafka topic, keyed by token id: what every gateway and the CLI share.

`enterprise token issue|revoke` produce a record (acks=all); each gateway reads the topic from the
start up to a fence it wrote itself, then follows it. The fence, not the broker's end offsets,
says when the table is complete: the embedded broker (Tansu 0.6.0) reports a partition's end as
the start of its last batch + 1 (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config.settings import Settings
from config.topics import TOKENS_TOPIC

from .tokens import EnterpriseToken, TokenTable, legacy_tokens

log = logging.getLogger(__name__)
FENCE_KEY = b"__fence__"


def tokens_topic(settings: Settings) -> str:
    return settings.topic(TOKENS_TOPIC)


async def publish(settings: Settings, tokens: list[EnterpriseToken]) -> None:
    """Write token records; returns once every replica has them (acks=all)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for t in tokens:
            await producer.send_and_wait(tokens_topic(settings), key=t.token_id.encode(), value=t.to_json())
    finally:
        await producer.stop()


class TokenFollower:
    """Keeps a `TokenTable` in step with the topic; `on_change` runs after each batch that changed it."""

    def __init__(self, settings: Settings, table: TokenTable, on_change: Callable[[], None] | None = None):
        self.settings = settings
        self.table = table
        self.on_change = on_change
        self.topic = tokens_topic(settings)
        self.consumer: AIOKafkaConsumer | None = None
        self.rounds = 0  # fetch rounds done while following
        self._round = asyncio.Event()

    async def load(self, timeout_s: float = 60.0) -> None:
        """Read the topic from its start up to a fresh fence in every partition."""
        topic = tokens_topic(self.settings)
        fence = orjson.dumps(uuid.uuid4().hex)  # JSON like every record, so any reader can decode the topic
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap, acks="all")
        await producer.start()
        try:
            partitions = sorted(await producer.partitions_for(topic))
            for p in partitions:
                await producer.send_and_wait(topic, key=FENCE_KEY, value=fence, partition=p)
        finally:
            await producer.stop()
        # The fetch wait bounds how long a new record waits on the broker before a gateway sees it:
        # the embedded broker answers a waiting fetch only when the wait is over (docs/ingest.md).
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.ingest_tokens_wait_ms,
        )
        await self.consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        pending = set(tps)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"enterprise tokens: no fence seen in {topic} after {timeout_s:.0f} s")
            fetched = await self.consumer.getmany(timeout_ms=500)
            for tp, msgs in fetched.items():
                for m in msgs:
                    if m.key == FENCE_KEY:
                        if m.value == fence:
                            pending.discard(tp)
                    elif m.key is not None and m.value is not None:
                        self.table.apply(EnterpriseToken.from_json(m.value))

    async def follow(self) -> None:
        """Apply new records as they come, until cancelled."""
        assert self.consumer is not None, "load() first"
        try:
            while True:
                fetched = await self.consumer.getmany(timeout_ms=self.settings.ingest_tokens_wait_ms)
                changed = False
                for msgs in fetched.values():
                    for m in msgs:
                        if m.key != FENCE_KEY and m.key is not None and m.value is not None:
                            changed |= self.table.apply(EnterpriseToken.from_json(m.value))
                if changed and self.on_change is not None:
                    try:
                        self.on_change()
                    except Exception:  # a failed auth-file write must not stop token updates
                        log.exception("applying a token change failed")
                self.rounds += 1
                done, self._round = self._round, asyncio.Event()
                done.set()
        finally:
            await self.stop()

    async def caught_up(self, timeout_s: float) -> None:
        """Wait until two fetch rounds have ended, so whatever was on the topic before the call is applied.

        Two, as the round under way may have fetched before the record was written. Lets a token
        issued a moment ago work at once instead of after the next round (`app.enterprise_of`)."""
        want = self.rounds + 2
        deadline = time.monotonic() + timeout_s
        while self.rounds < want and self.consumer is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._round.wait(), left)

    async def stop(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()


async def load_table(settings: Settings) -> TokenTable:
    """The whole table as of now (for the CLI): read, migrate a legacy SQLite file, done."""
    table = TokenTable()
    follower = TokenFollower(settings, table)
    try:
        await follower.load()
    finally:
        await follower.stop()
    await migrate_legacy(settings, table)
    return table


async def migrate_legacy(settings: Settings, table: TokenTable) -> int:
    """Publish the tokens of a pre-Kafka SQLite token file that the topic lacks, then rename the file.

    Run on first use by the gateway and the CLI, so an existing deployment's tokens keep working.
    Idempotent: records are keyed by token id, so two gateways migrating at once write the same."""
    path: Path = settings.ingest_db_path
    if not path.exists():
        return 0
    missing = [t for t in legacy_tokens(path) if table.get(t.token_id) is None]
    await publish(settings, missing)
    for t in missing:
        table.apply(t)
    with contextlib.suppress(FileNotFoundError):  # another process migrated it a moment ago
        path.rename(path.with_name(path.name + ".migrated"))
    if missing:
        log.warning("moved %d enterprise tokens from %s to the topic %s", len(missing), path, tokens_topic(settings))
    return len(missing)


def run(coro):
    """Run a coroutine from sync code (the CLI)."""
    return asyncio.run(coro)
