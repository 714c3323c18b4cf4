"""Correlation's second stage: enterprise and region scopes over the `correlation.scope` repartition topic.

The worker re-keys its hazard and incident events by scope key into the repartition topic; this
stage reads it with a plain aiokafka `getmany` consumer in a group of its own
(`WORKER_ID-scope`), so with N workers each gets some of its partitions, and keeps each scope
key's state in memory (rules/scope.py). It runs as a task of `safewatch worker` or alone as
`safewatch scope`. Outputs: scope incidents to `incidents` (keyed by scope key), enterprise risk
colours to the compacted `risk` topic, both to InfluxDB. Every `COMMIT_INTERVAL_S` the producer is
flushed, changed keys are checkpointed (`scope:<key>` on the rule-state topic, with the newest
repartition offset each covers) and only then offsets are committed: a restart skips what a key's
checkpoint covers and re-runs the rest, emitting the same events with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaConnectionError, KafkaError, KafkaTimeoutError
from prometheus_client import Counter

from config.settings import Settings
from config.topics import CHECKPOINT_TOPIC, INCIDENTS_TOPIC, RISK_TOPIC, SCOPE_TOPIC
from rules.models import IncidentEvent
from rules.patterns import CorrelationRule, load_correlation_rules
from rules.risk import Risk, advance_with_risk, feed_with_risk
from rules.scope import STAGE2_SCOPES, Record, ScopeEngine, rules_scopes
from sensors.producer import kafka_partition
from sensors.registry import Registry

from .checkpoint import commit_done, load_snapshots
from .influx import InfluxWriter, incident_line, incident_state_line, risk_line
from .reload import reload_correlation

log = logging.getLogger(__name__)

RECORDS = Counter("safewatch_scope_records_total", "Repartition records read by the scope stage", ["outcome"])
SCOPE_INCIDENTS = Counter("safewatch_scope_incident_events_total", "Scope incident events emitted", ["status"])
RISKS = Counter("safewatch_risk_changes_total", "Enterprise risk colour changes published", ["colour"])
Send = Callable[[str, bytes, bytes], Awaitable[None]]


def emitted_scopes(settings: Settings, rules: list[CorrelationRule]) -> list[str]:
    """Scope levels the worker re-keys into the repartition topic: those with rules, and enterprise for risk."""
    used = set(rules_scopes(rules))
    if settings.risk_enabled:
        used.add("enterprise")
    return [s for s in STAGE2_SCOPES if s in used]


def scope_names(registry: Registry):
    """`(scope, key) → name` for titles: the enterprise's name, the region's name where the registry has it."""

    def name(scope: str, key: str) -> str:
        if scope == "enterprise":
            ent = registry.enterprises.get(key)
            return ent.name if ent else key
        region = registry.regions.get(key)
        return f"{region.name} ({key})" if region else f"{scope} {key}"

    return name


class ScopeStage:
    """The stage's engine and bookkeeping; knows nothing of consumers (the loop in `run_scope_stage` does)."""

    def __init__(self, settings: Settings, registry: Registry, rules: list[CorrelationRule] | None = None):
        self.settings = settings
        rules = load_correlation_rules(settings.correlation_dir) if rules is None else rules
        self.engine = ScopeEngine(
            rules,
            names=scope_names(registry),
            quiet_ms=int(settings.scope_quiet_s * 1000),
            default_window_ms=int(settings.correlation_window_s * 1000),
        )
        classes = {e.id: e.supervision_class for e in registry.enterprises.values()}
        self.classes = classes if settings.risk_enabled else None  # None: no risk colours
        self.regions = {e.id: e.region for e in registry.enterprises.values()}
        self.scope_topic = settings.topic(SCOPE_TOPIC)
        self.incidents_topic = settings.topic(INCIDENTS_TOPIC)
        self.risk_topic = settings.topic(RISK_TOPIC)
        self.checkpoint_topic = settings.topic(CHECKPOINT_TOPIC)
        self.src: dict[str, tuple[int, int]] = {}  # state key → (partition, newest offset applied)
        self.keys: dict[int, set[str]] = {}  # our partitions → their state keys
        self.dirty: set[str] = set()

    def adopt(self, partitions: list[int], n_partitions: int, snaps: dict[str, dict]) -> int:
        """Restore the keys of newly assigned partitions from their checkpoints; returns how many."""
        n = 0
        for p in partitions:
            self.keys.setdefault(p, set())
        for name, snap in snaps.items():
            if not name.startswith("scope:"):
                continue
            sk = name[len("scope:") :]
            p = kafka_partition(sk.encode(), n_partitions)
            if p in partitions:
                self.engine.restore(sk, snap["state"])
                self.src[sk] = (int(snap["src"][0]), int(snap["src"][1]))
                self.keys[p].add(sk)
                n += 1
        return n

    def release(self, partition: int) -> list[str]:
        """Forget the keys of a partition that went elsewhere; returns them."""
        gone = sorted(self.keys.pop(partition, set()))
        for sk in gone:
            self.engine.restore(sk, None)
            self.src.pop(sk, None)
            self.dirty.discard(sk)
        return gone

    def apply(self, partition: int, offset: int, value: bytes) -> tuple[list[IncidentEvent], list[Risk]]:
        """One repartition record: skipped if its key's checkpoint covers it, else fed to the engine."""
        try:
            rec = Record.from_json(value)
        except (ValueError, KeyError, TypeError) as exc:
            # Only the worker writes this topic; a record it cannot have written is logged and counted.
            RECORDS.labels("malformed").inc()
            log.error("malformed repartition record at %s:%d: %r", partition, offset, exc)
            return [], []
        sk = rec.state_key
        src = self.src.get(sk)
        if src is not None and src[0] == partition and offset <= src[1]:
            RECORDS.labels("redelivered").inc()
            return [], []
        RECORDS.labels("applied").inc()
        self.keys.setdefault(partition, set()).add(sk)
        events, risk = feed_with_risk(self.engine, rec, self.classes)
        self.src[sk] = (partition, offset)
        self.dirty.add(sk)
        return events, [risk] if risk else []

    def tick(self, now: int, partitions: list[int]) -> tuple[list[IncidentEvent], list[Risk]]:
        """Timers of the keys of caught-up partitions up to event time `now`."""
        keys = sorted(k for p in partitions for k in self.keys.get(p, ()))
        events, risks = advance_with_risk(self.engine, now, keys, self.classes)
        touched = {f"{e.scope}:{e.scope_key}" for e in events} | {f"enterprise:{r.enterprise_id}" for r in risks}
        self.dirty |= touched & set(keys)
        return events, risks

    def outputs(self, events: list[IncidentEvent], risks: list[Risk]) -> tuple[list[tuple[str, bytes, bytes]], list]:
        """(topic, key, value) messages and InfluxDB lines for what the engine produced."""
        msgs, lines = [], []
        for e in events:
            msgs.append((self.incidents_topic, f"{e.scope}:{e.scope_key}".encode(), e.to_json()))
            lines += [incident_line(e), incident_state_line(e)]
            SCOPE_INCIDENTS.labels(e.status).inc()
        for r in risks:
            msgs.append((self.risk_topic, r.enterprise_id.encode(), r.to_json()))
            lines.append(risk_line(r, self.regions.get(r.enterprise_id, "")))
            RISKS.labels(r.colour).inc()
        return msgs, lines

    def snapshots(self) -> list[tuple[bytes, bytes]]:
        """Checkpoint records of the keys changed since their last one (then clean)."""
        out = []
        for sk in sorted(self.dirty):
            if sk in self.src:
                value = {"state": self.engine.snapshot(sk), "src": list(self.src[sk])}
                out.append((f"scope:{sk}".encode(), orjson.dumps(value)))
        self.dirty.clear()
        return out


async def run_scope_stage(settings: Settings, registry: Registry, *, stop: asyncio.Event | None = None) -> None:
    """The stage's consumer loop until cancelled (or `stop` is set); outputs go out before offsets commit."""
    stage = ScopeStage(settings, registry)
    stop = stop or asyncio.Event()
    lock = asyncio.Lock()
    done: dict[TopicPartition, int] = {}
    live: dict[int, bool] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        linger_ms=settings.producer_linger_ms,
        max_batch_size=settings.producer_batch_bytes,
        request_timeout_ms=int(settings.producer_timeout_s * 1000),
    )
    # The stage may start while the broker is away (it starts after the worker's first batch):
    # it waits, like the telemetry consumer, instead of taking the worker down.
    await _until_started(producer.start, settings)
    writer = InfluxWriter(settings.model_copy(update={"influx_spool_dir": _spool(settings, "scope")}))
    events_writer = (
        InfluxWriter(
            settings.model_copy(
                update={"influx_rp": settings.influx_events_rp, "influx_spool_dir": _spool(settings, "scope-events")}
            )
        )
        if settings.influx_events_rp
        else None
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=f"{settings.worker_id}-scope",
        client_id=f"{settings.worker_id}-scope",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_wait_ms,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(max(settings.session_timeout_s / 5, 0.5) * 1000),
    )
    n_partitions = len(await producer.partitions_for(stage.scope_topic))

    async def emit(events: list[IncidentEvent], risks: list[Risk]) -> None:
        msgs, lines = stage.outputs(events, risks)
        for topic, key, value in msgs:
            await producer.send(topic, value, key=key)
        if lines:
            await asyncio.gather(*(w.write(lines) for w in (writer, events_writer) if w is not None))

    async def checkpoint() -> None:
        await producer.flush()  # outputs first: a checkpoint says what it covers is on the broker
        for key, value in stage.snapshots():
            await producer.send(stage.checkpoint_topic, value, key=key)
        await producer.flush()

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        await commit_done(consumer, offsets, done, "scope stage")

    class Rebalance(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked) -> None:
            async with lock:
                await checkpoint()
                await commit({tp: off for tp, off in done.items() if tp in revoked})
                for tp in revoked:
                    stage.release(tp.partition)
                    done.pop(tp, None)
                    live.pop(tp.partition, None)

        async def on_partitions_assigned(self, assigned) -> None:
            async with lock:
                parts = sorted(tp.partition for tp in assigned)
                for p in [p for p in stage.keys if p not in parts]:  # reassigned without a revoke
                    stage.release(p)
                new = [p for p in parts if p not in stage.keys]
                if new:
                    snaps = await load_snapshots(settings, stage.checkpoint_topic)
                    n = stage.adopt(new, n_partitions, snaps)
                    log.info("scope stage: now reading %d partition(s), restored %d scope key(s)", len(new), n)

    consumer.subscribe([stage.scope_topic], listener=Rebalance())
    await _until_started(consumer.start, settings)
    lag_ms = int(settings.scope_clock_lag_s * 1000)
    last_commit = last_tick = time.monotonic()
    rules_seen, _ = reload_correlation(settings, None)
    last_reload = time.monotonic()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=settings.take_max)
            async with lock:
                mine = consumer.assignment()
                for tp, msgs in fetched.items():
                    if tp not in mine:
                        continue  # taken away by a rebalance since the fetch: the new owner's
                    for m in msgs:
                        if m.value is not None:
                            await emit(*stage.apply(tp.partition, m.offset, m.value))
                    done[tp] = msgs[-1].offset + 1
                if time.monotonic() - last_reload >= settings.rules_reload_s:
                    last_reload = time.monotonic()
                    rules_seen, rules = reload_correlation(settings, rules_seen)
                    if rules is not None:
                        # Closes what a removed rule had open; the keys' other state carries on.
                        closed = stage.engine.set_rules(rules)
                        stage.dirty |= {f"{e.scope}:{e.scope_key}" for e in closed}
                        await emit(closed, [])
                        log.info(
                            "scope stage: %d correlation rules reloaded, %d incident(s) closed", len(rules), len(closed)
                        )
                if time.monotonic() - last_tick >= 1.0:
                    # Timers only for partitions read to their end: a backlog is data still to come, not silence.
                    for tp in mine:
                        live[tp.partition] = await _caught_up(consumer, tp)
                    events, risks = stage.tick(int(time.time() * 1000) - lag_ms, [p for p, ok in live.items() if ok])
                    await emit(events, risks)
                    last_tick = time.monotonic()
                offsets = None
                if done and time.monotonic() - last_commit >= settings.commit_interval_s:
                    offsets = dict(done)
                    await checkpoint()
            if offsets is not None:
                await commit(offsets)  # not under the lock: a commit may wait on a rebalance
                last_commit = time.monotonic()
    finally:
        with contextlib.suppress(KafkaError):
            async with lock:
                offsets = dict(done)
                await checkpoint()
            await commit(offsets)
        await consumer.stop()
        await producer.stop()
        for w in (writer, events_writer):
            if w is not None:
                await w.aclose()


async def _until_started(start: Callable[[], Awaitable[None]], settings: Settings) -> None:
    """`start()` a client, trying again each second while the broker is unreachable (up to `broker_wait_s`)."""
    deadline = time.monotonic() + settings.broker_wait_s
    while True:
        try:
            await start()
            return
        except (KafkaConnectionError, KafkaTimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("scope stage: broker unreachable at start (%r); trying again", exc)
            await asyncio.sleep(1.0)


async def _caught_up(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    hw = consumer.highwater(tp)
    if hw is None:
        return False
    try:
        # Bounded: during a rebalance the position waits on the group.
        return await asyncio.wait_for(consumer.position(tp), 1.0) >= hw
    except (IllegalStateError, TimeoutError):
        return False


def _spool(settings: Settings, name: str):
    return settings.spool_dir.with_name(settings.spool_dir.name + f"-{name}")


def run_alone(settings: Settings, registry: Registry) -> None:
    """`safewatch scope`: the stage until SIGINT/SIGTERM, which checkpoint and commit what is done."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_scope_stage(settings, registry, stop=stop)

    asyncio.run(main())
