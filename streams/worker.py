"""`safewatch worker`: the Faust app that runs the pipeline over every telemetry topic.

Faust runs the service: its lifecycle, the producer and the 1 s timer. The telemetry itself is
read by a plain aiokafka consumer with `getmany` in a Faust task, not by a Faust agent: an agent
costs ~110 µs a message whatever it does (measured here ~4.4k single-reading messages/s a
worker), and its `take` acknowledges a batch whose body raised. Offsets are committed by hand,
only for batches whose work is done. Rule state lives in memory and is checkpointed per batch
(streams/checkpoint.py), never as a Table write per reading.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaConnectionError, KafkaError, KafkaTimeoutError
from faust.exceptions import NotReady
from prometheus_client import Gauge, start_http_server

from config.heap import freeze_startup_heap
from config.logs import setup_logging
from config.settings import Settings
from config.topics import (
    CHECKPOINT_TOPIC,
    DEADLETTER_TOPIC,
    HAZARDS_TOPIC,
    INCIDENTS_TOPIC,
    NOTICES_TOPIC,
    RISK_TOPIC,
    SCOPE_TOPIC,
    TELEMETRY_TOPICS,
    TOKENS_TOPIC,
)
from rules.engine import RuleEngine
from sensors.registry import load_registry

from .checkpoint import commit_done, load_snapshots, sites_by_partition
from .influx import InfluxWriter
from .pipeline import Pipeline
from .reload import RuleReloader
from .scope_stage import emitted_scopes, run_scope_stage

# The embedded broker reports a partition's end as the start of its last batch + 1, so this reads
# low there (README, the embedded broker's faults); on Kafka it is the true lag.
LAG = Gauge("safewatch_consumer_lag", "Telemetry messages behind the partition's end", ["topic", "partition"])

log = logging.getLogger(__name__)
FINAL_CHECKPOINT_WAIT_S = 15.0  # how long a stopping worker waits for its last batch, checkpoint and commit


def topic_specs(settings: Settings) -> dict[str, dict]:
    """Every topic the worker reads or writes, with its config."""
    specs: dict[str, dict] = {
        settings.topic(t): {}
        for t in TELEMETRY_TOPICS + (HAZARDS_TOPIC, INCIDENTS_TOPIC, NOTICES_TOPIC, DEADLETTER_TOPIC, SCOPE_TOPIC)
    }
    specs[settings.topic(CHECKPOINT_TOPIC)] = {"cleanup.policy": "compact"}
    specs[settings.topic(RISK_TOPIC)] = {"cleanup.policy": "compact"}  # the newest colour per enterprise
    specs[settings.topic(TOKENS_TOPIC)] = {"cleanup.policy": "compact"}  # the ingest gateways' tokens
    return specs


def build_app(settings: Settings) -> faust.App:
    """The Faust app with its telemetry consumer task and timer, wired to a fresh engine from the registry."""
    app = faust.App(
        # Not worker_id: Faust's own (idle) consumer would join the telemetry consumer's group with
        # another protocol, and the broker refuses the mix (InconsistentGroupProtocol).
        f"{settings.worker_id}-service",
        broker=f"kafka://{settings.bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,  # topics are created up front with their configs
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 5, 0.5),
        broker_commit_interval=1.0,
        producer_linger=settings.producer_linger_ms / 1000.0,
        # A full producer batch makes the next send wait for the one in flight: at 16 KiB (Faust's
        # default) an incident or a checkpoint fills one, and hazards queued behind it waited ~100 ms.
        producer_max_batch_size=settings.producer_batch_bytes,
        web_enabled=False,
        store="memory://",
        datadir=str(settings.state_dir / "faust"),  # not the current directory (the repository, in a demo)
    )
    registry = load_registry(settings.registry)
    reloader = RuleReloader(settings)
    catalog, windows = reloader.initial(registry)
    engine = RuleEngine(
        registry,
        catalog,
        correlation_window_s=settings.correlation_window_s,
        incident_quiet_s=settings.incident_quiet_s,
        lateness_s=settings.lateness_s,
        maintenance=windows,
        correlation_rules=reloader.correlation(catalog),
    )
    site_sector = {sid: s.sector for sid, s in registry.sites.items()}
    freeze_startup_heap()
    # One batch, tick, restore or release at a time: each sees the engine whole.
    lock = asyncio.Lock()
    owned: set[tuple[str, int]] = set()  # telemetry partitions whose sites are restored here
    assigned: set[tuple[str, int]] = set()  # what the group gave us last
    done: dict[TopicPartition, int] = {}  # next offset to commit, per partition: everything before it is done
    telemetry_names = {settings.topic(t) for t in TELEMETRY_TOPICS}
    # Built in the task: aiokafka binds to the running loop, which Faust starts later.
    options = dict(
        bootstrap_servers=settings.bootstrap,
        group_id=settings.worker_id,
        client_id=f"{settings.worker_id}-telemetry",
        enable_auto_commit=False,  # offsets commit only after a batch's work is done and checkpointed
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(max(settings.session_timeout_s / 5, 0.5) * 1000),
    )
    consumer: AIOKafkaConsumer | None = None

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    async def caught_up(topic: str, partition: int, last: int | None) -> bool:
        tp = TopicPartition(topic, partition)
        if consumer is None or tp not in consumer.assignment():
            return False
        highwater = consumer.highwater(tp)
        if highwater is None:
            return False
        if last is None:  # nothing read since we got it: where the group's committed offset put us
            try:
                # Bounded: during a rebalance the position waits on the group, which may wait on us.
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
            except (IllegalStateError, TimeoutError):
                return False
            last = position - 1
        return last + 1 >= highwater

    pipeline = Pipeline(
        settings,
        engine,
        send,
        InfluxWriter(settings),
        reloader,
        flush=lambda: app.producer.flush(),
        caught_up=caught_up,
    )
    # The repartition for the scope stage: the levels its rules (and risk colours) need.
    pipeline.scopes = emitted_scopes(settings, reloader.correlation_rules)
    if settings.influx_events_rp:
        spool = settings.spool_dir.with_name(settings.spool_dir.name + "-events")
        pipeline.events_writer = InfluxWriter(
            settings.model_copy(update={"influx_rp": settings.influx_events_rp, "influx_spool_dir": spool})
        )

    async def restore_inputs() -> tuple[dict[tuple[str, int], list[str]], dict]:
        """The site → partition map and the checkpoints; a broker outage is waited out, not died of."""
        deadline = time.monotonic() + settings.broker_wait_s
        while True:
            try:
                by_partition = await sites_by_partition(settings, site_sector)
                return by_partition, await load_snapshots(settings, settings.topic(CHECKPOINT_TOPIC))
            except (KafkaConnectionError, KafkaTimeoutError) as exc:
                # A rebalance right as the broker went away: the new partitions' readings wait
                # for their sites' checkpoints, as they must, and nothing else of ours is lost.
                if time.monotonic() >= deadline:
                    raise
                log.warning("broker unreachable while restoring sites (%r); trying again", exc)
                await asyncio.sleep(1.0)

    async def sync_ownership() -> None:
        """Restore exactly the sites of newly assigned partitions, before any of their readings."""
        new = assigned - owned
        if not new:
            return
        by_partition, snaps = await restore_inputs()
        n = 0
        for tp in sorted(new):
            for site in by_partition.get(tp, []):
                pipeline.adopt(site, tp[0], tp[1], snaps.get(site))
                n += site in snaps
            owned.add(tp)
        log.info(
            "now evaluating %d partition(s), restored %d site checkpoint(s)",
            len(new),
            n,
            extra={"partitions": [f"{t}:{p}" for t, p in sorted(new)]},
        )

    def ready() -> dict[TopicPartition, int]:
        """Offsets to commit: after what was handled, but never past a reading still held for reordering."""
        return {tp: pipeline.committable(tp.topic, tp.partition, off) for tp, off in done.items()}

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        if consumer is not None:
            await commit_done(consumer, offsets, done, "worker")

    class Rebalance(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked) -> None:
            # Their sites are another worker's now: commit what is done, write where we got to, then
            # forget them, so no timer of ours fires for a site we no longer read and no checkpoint
            # of ours overwrites its owner's.
            async with lock:
                gone = [(tp.topic, tp.partition) for tp in revoked if (tp.topic, tp.partition) in owned]
                sites = [engine.site_ids[r] for tp in gone for r in pipeline.partition_sites.get(tp, [])]
                await pipeline.checkpoint(sites)
                await commit({tp: off for tp, off in ready().items() if tp in revoked})
                for topic, partition in gone:
                    pipeline.release(topic, partition)
                    owned.discard((topic, partition))
                for tp in revoked:
                    done.pop(tp, None)
                if gone:
                    log.info("handed over %d partition(s)", len(gone))

        async def on_partitions_assigned(self, assigned_tps) -> None:
            # Sites may have moved here: restore them before the next batch (sync_ownership, under the lock).
            async with lock:
                assigned.clear()
                assigned.update((tp.topic, tp.partition) for tp in assigned_tps if tp.topic in telemetry_names)
                # aiokafka can assign anew without revoking what it assigned last (a rejoin that
                # raced another one revokes the assignment before that): whatever is not ours any
                # more is dropped here, with no final checkpoint, as its new owner may have begun.
                lost = owned - assigned
                for topic, partition in lost:
                    pipeline.release(topic, partition)
                    owned.discard((topic, partition))
                    done.pop(TopicPartition(topic, partition), None)
                if lost:
                    log.warning("dropped %d partition(s) reassigned without a revoke", len(lost))

    async def start_consumer() -> AIOKafkaConsumer:
        """The telemetry consumer, started; a broker that went away since the worker's start is waited for."""
        deadline = time.monotonic() + settings.broker_wait_s
        while True:
            started = AIOKafkaConsumer(**options)
            started.subscribe(sorted(telemetry_names), listener=Rebalance())
            try:
                await started.start()
                return started
            except (KafkaConnectionError, KafkaTimeoutError) as exc:
                await started.stop()
                if time.monotonic() >= deadline:
                    raise
                log.warning("broker unreachable while starting the telemetry consumer (%r); trying again", exc)
                await asyncio.sleep(1.0)

    stopping = asyncio.Event()  # the worker is stopping: finish the batch, checkpoint, commit
    finished = asyncio.Event()  # ... and the loop has ended

    # (mode types a receiver with mypy_extensions' argument kinds, which mypy matches to no coroutine function)
    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def finish_first(sender: faust.App, *args: Any, **kwargs: Any) -> None:
        # Faust stops its producer before it cancels tasks: the loop must end while the producer
        # can still carry the final checkpoint, or the commit after it is skipped.
        stopping.set()
        if consumer is not None:
            try:
                await asyncio.wait_for(finished.wait(), FINAL_CHECKPOINT_WAIT_S)
            except TimeoutError:
                log.warning("the telemetry loop did not end in %g s; stopping without it", FINAL_CHECKPOINT_WAIT_S)

    @app.task
    async def evaluate() -> None:
        nonlocal consumer
        consumer = await start_consumer()
        last_commit = time.monotonic()
        try:
            while not stopping.is_set():
                fetched = await consumer.getmany(timeout_ms=200, max_records=settings.take_max)
                if not fetched and pipeline.holding:
                    # Nothing new: held readings of quiet sites still go out, between the 1 s ticks.
                    async with lock:
                        try:
                            await pipeline.release_due()
                        except BaseException as exc:
                            _die(exc)
                if fetched:
                    async with lock:
                        # A rebalance between the fetch and here may have taken partitions away:
                        # their messages are the new owner's to read, not ours to evaluate.
                        mine = consumer.assignment()
                        fetched = {tp: msgs for tp, msgs in fetched.items() if tp in mine}
                        batch = [m for msgs in fetched.values() for m in msgs]
                        try:
                            await sync_ownership()
                            await pipeline.handle(batch)
                        except BaseException as exc:
                            # Nothing of this batch is committed; a restart reads it again.
                            _die(exc)
                        for tp, msgs in fetched.items():
                            done[tp] = msgs[-1].offset + 1
                            end = consumer.highwater(tp)
                            if end is not None:
                                LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - done[tp]))
                if done and time.monotonic() - last_commit >= settings.commit_interval_s:
                    async with lock:
                        offsets = ready()
                        try:
                            await pipeline.checkpoint()
                        except BaseException as exc:
                            _die(exc)
                    # Not under the lock: a commit may wait on a rebalance, whose listener takes the lock.
                    await commit(offsets)
                    last_commit = time.monotonic()
        finally:
            try:
                async with lock:
                    offsets = ready()
                    await pipeline.checkpoint()
                await commit(offsets)
            except (KafkaError, NotReady) as exc:
                # The broker gone at the stop, or Faust's producer stopped first (a stop that did not
                # come through `finish_first`): nothing more is committed, and a restart reads on
                # from the last commit (what it covers is checkpointed).
                log.warning("no final checkpoint (%r); the next start reads on from the last commit", exc)
            try:
                await consumer.stop()
                for writer in (pipeline.writer, pipeline.events_writer):
                    if writer is not None:
                        await writer.aclose()
            finally:
                finished.set()

    if settings.scope_stage:

        @app.task
        async def scopes() -> None:
            # Its own consumer group, state and checkpoints; a failure exits like a failed batch.
            try:
                await run_scope_stage(settings, registry)
            except BaseException as exc:
                _die(exc)

    @app.timer(interval=1.0)
    async def clock():
        # Offline sensors never send the reading that would reveal them: time must.
        async with lock:
            try:
                await sync_ownership()
                await pipeline.tick()
            except Exception as exc:
                _die(exc)

    return app


def _die(exc: BaseException) -> None:
    """Stop the process at once, committing nothing more: a restart reads again from the last commit."""
    if isinstance(exc, asyncio.CancelledError):
        raise exc  # a shutdown, not a failure: the task's `finally` checkpoints and commits what is done
    log.critical("batch failed, exiting without acknowledging it: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run the worker until SIGINT/SIGTERM; its topics must exist (see `topic_specs`)."""
    setup_logging("worker", loglevel)
    start_http_server(settings.worker_web_port, addr=settings.metrics_host)
    app = build_app(settings)
    # override_logging=False: Faust's own set-up would replace ours with colour codes, even in a file.
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    worker.spinner = None  # Faust's start-up spinner writes cursor codes even into a log file
    worker.execute_from_commandline()
