"""One batch of telemetry messages: validate → rules → hazards, incidents, notices, dead-letter, storage.

Kept apart from Faust so the order of work per batch is easy to read: alerts first (a duty
officer waits on them), then dead-letters and the rule-state checkpoint, then InfluxDB. The
batch is acknowledged (offsets may commit) only after all of it is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import numpy as np
import orjson
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from config.settings import Settings
from config.topics import CHECKPOINT_TOPIC, DEADLETTER_TOPIC, HAZARDS_TOPIC, INCIDENTS_TOPIC, NOTICES_TOPIC, SCOPE_TOPIC
from rules.batch import Batch, BatchBuilder, concat
from rules.engine import NEVER, RuleEngine
from rules.reorder import ReorderBuffer
from rules.scope import scope_records
from sensors.deadletter import Consumed, deadletter_record, ts_hint
from sensors.schema import (
    FAST_READING,
    DecodeError,
    FastFrame,
    FastReading,
    Frame,
    Reading,
    decode_fast,
    decode_message,
    split_frame,
)

from .influx import (
    InfluxWriter,
    deadletter_line,
    hazard_line,
    incident_line,
    incident_state_line,
    notice_line,
    reading_lines,
    setpoint_head,
    tags,
)
from .reload import RuleReloader
from .scope_stage import emitted_scopes

log = logging.getLogger(__name__)

READINGS = PromCounter("safewatch_readings_total", "Readings evaluated or stored")
MESSAGES = PromCounter("safewatch_messages_total", "Telemetry messages consumed")
DEADLETTERS = PromCounter("safewatch_deadletter_total", "Dead-lettered readings or messages", ["reason"])
SKIPPED = PromCounter("safewatch_rule_skipped_total", "Readings stored but not evaluated", ["why"])
HAZARDS = PromCounter("safewatch_hazard_events_total", "Hazard events emitted", ["event"])
INCIDENTS = PromCounter("safewatch_incident_events_total", "Incident events emitted", ["status"])
HELD = Gauge("safewatch_reorder_held", "Readings held by the reorder buffer (SAFEWATCH_REORDER_MS)")
NOTICES = PromCounter("safewatch_notice_events_total", "Maintenance notice events emitted", ["status"])
BATCH_SECONDS = Histogram(
    "safewatch_batch_seconds", "Time to handle one batch", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
)

Send = Callable[[str, bytes, bytes], Awaitable[None]]
Flush = Callable[[], Awaitable[None]]
# (topic, partition, newest offset handled or None) → has this worker read all there is?
CaughtUp = Callable[[str, int, int | None], Awaitable[bool]]
EMPTY_SNAPSHOT: dict = {"v": 2}  # restoring it resets a site to "never seen"
EVERYTHING = np.iinfo(np.int64).max  # "every reading of this message was handled already"


async def _nothing() -> None:
    return None


def _frame_item(value: bytes, slot: int, sensor_id: str) -> dict | None:
    """Reading `slot` of a frame as it was sent (a salvaged frame lost its bad items, so match the id)."""
    items = orjson.loads(value).get("readings", [])
    if slot < len(items) and isinstance(items[slot], dict) and items[slot].get("sensor_id") == sensor_id:
        return items[slot]
    return next((x for x in items if isinstance(x, dict) and x.get("sensor_id") == sensor_id), None)


class Pipeline:
    """Handles batches for one worker; holds the engine and the output paths."""

    def __init__(
        self,
        settings: Settings,
        engine: RuleEngine,
        send: Send,
        writer: InfluxWriter | None,
        reloader: RuleReloader | None = None,
        flush: Flush | None = None,
        caught_up: CaughtUp | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.send = send
        self.flush = flush or _nothing
        self.writer = writer
        # A second writer to the long-kept events policy (SAFEWATCH_INFLUX_EVENTS_RP), set by the worker.
        self.events_writer: InfluxWriter | None = None
        self.hazards_topic = settings.topic(HAZARDS_TOPIC)
        self.incidents_topic = settings.topic(INCIDENTS_TOPIC)
        self.notices_topic = settings.topic(NOTICES_TOPIC)
        self.deadletter_topic = settings.topic(DEADLETTER_TOPIC)
        self.checkpoint_topic = settings.topic(CHECKPOINT_TOPIC)
        self.scope_topic = settings.topic(SCOPE_TOPIC)
        # Scope levels re-keyed into the repartition topic for the scope stage (the worker sets
        # them from the correlation rules, streams/scope_stage.py); none: no repartition records.
        self.scopes: list[str] = []
        self.prefixes = [self._prefix(s) for s in engine.sensors]
        self.setpoint_heads = [
            setpoint_head(self.prefixes[i], s.alarms.set_points()) for i, s in enumerate(engine.sensors)
        ]
        # Event time each sensor's set points are next stored; never for a sensor without any, so
        # it does not make every batch take the slow loop below.
        self._setpoint_due = np.array(
            [0 if head is not None else np.iinfo(np.int64).max for head in self.setpoint_heads], dtype=np.int64
        )
        self.reloader = reloader or RuleReloader(settings)
        self.caught_up = caught_up
        self.future_ms = int(settings.future_tolerance_s * 1000)
        n = len(engine.site_ids)
        self._seen_wall = np.zeros(n)  # monotonic time each site's newest reading arrived (0: never)
        self._site_live = np.zeros(n, dtype=bool)  # its partition is caught up
        self._site_caught = np.zeros(n, dtype=bool)  # its partition was caught up once since we got it
        self.site_offset: dict[str, tuple[str, int, int]] = {}  # site → newest (topic, partition, offset) done
        self.last_offset: dict[tuple[str, int], int] = {}  # newest offset handled per partition
        # Per partition: the newest offset a restored checkpoint covers; a message after it and after
        # `last_offset` cannot be a redelivery, so the hot path skips `_redelivered` for it.
        self.restored_to: dict[tuple[str, int], int] = {}
        self.partition_sites: dict[tuple[str, int], list[int]] = {}  # our partitions → their site rows
        self.live: dict[tuple[str, int], bool] = {}
        self.dirty: set[str] = set()  # sites whose state changed since their last checkpoint
        # SAFEWATCH_REORDER_MS: readings wait per site until its watermark passes them (None: off).
        self.hold_ms = settings.reorder_ms
        self.reorder = ReorderBuffer(engine.sensor_site, n, engine.lateness_ms) if settings.reorder_ms > 0 else None
        # site → (newest offset read, watermark) of its restored checkpoint: messages after the
        # checkpoint's offset and up to that one had their readings up to the watermark handled.
        self.resume: dict[str, tuple[int, int]] = {}
        # InfluxDB writes (readings, events) of handled batches still on their way, oldest first:
        # the next batch is read meanwhile (a hazard does not wait behind the last batch's write),
        # and `checkpoint`, which comes before every commit, waits for all of them.
        self.storing: deque[asyncio.Future] = deque()

    def _prefix(self, sensor) -> str:
        info = self.engine.site_info[sensor.site_id]
        return tags(
            "reading",
            sensor_id=sensor.id,
            site_id=sensor.site_id,
            sector=info.sector,
            region=info.region,
            enterprise_id=info.enterprise_id,
            quantity=sensor.quantity,
            unit=sensor.unit,
            area=sensor.area,
        )

    async def handle(self, messages: Sequence[Consumed]) -> None:
        """Evaluate one batch and send its events; its readings are stored by the end of the next `checkpoint`."""
        started = time.perf_counter()
        builder = self.engine.new_batch()
        again = self.engine.new_batch()  # redeliveries: stored, not evaluated, not dead-lettered
        resumed = self.engine.new_batch()  # read before a restart, still held then: evaluated, not dead-lettered
        dead: list[tuple[str, dict, bytes]] = []  # (reason, record, key)
        self._take_all(messages, builder, resumed, again, dead, int(time.time() * 1000))

        for r in builder.rejects:
            site = r.payload.get("site_id")
            origin: Consumed = r.origin  # type: ignore[assignment]  # what _take gave the builder
            dead.append(
                (
                    r.reason,
                    deadletter_record(r.reason, r.detail, origin, payload=r.payload, site_id=site),
                    str(site or "").encode(),
                )
            )

        incoming = builder.build()
        if resumed.idx:
            incoming = concat([incoming, resumed.build()])
        self._observe(messages, incoming)
        if self.reorder is None:
            batch = incoming
            result = self.engine.process(batch)
            late = result.late
        else:
            # Late is decided on arrival, against the sensor's newest reading held or evaluated, as
            # without a hold; the rest waits for its site's watermark and comes out sorted.
            late = self.reorder.push(incoming, np.array([m.offset for m in incoming.origin]), self.engine.last_ts)
            batch = self.reorder.release(self._watermarks())
            HELD.set(len(self.reorder))
            result = self.engine.process(batch)
            dead.extend(self._late(incoming, p) for p in late.tolist())
        # (with a hold, none: a released reading is never late, but the engine decides in either case)
        for p in result.late.tolist():
            dead.append(self._late(batch, p))
        redelivered = again.build()
        if len(redelivered):
            SKIPPED.labels("redelivered").inc(len(redelivered))

        # Readings go to InfluxDB while hazards go to the broker. Both are done (stored or spooled,
        # and flushed) by the end of the next `checkpoint`, which comes before the offsets of this
        # batch are committed.
        self.storing.append(asyncio.ensure_future(self._store_readings(incoming, late, redelivered)))
        await self._emit(result, dead)
        while len(self.storing) > self.settings.influx_batches_in_flight:
            await self.storing.popleft()  # InfluxDB is slower than the stream: wait for it
        MESSAGES.inc(len(messages))
        READINGS.inc(len(incoming) + len(redelivered))
        BATCH_SECONDS.observe(time.perf_counter() - started)

    def _take_all(
        self,
        messages: Sequence[Consumed],
        builder: BatchBuilder,
        resumed: BatchBuilder,
        again: BatchBuilder,
        dead: list,
        now_ms: int,
    ) -> None:
        """Decode a batch's messages into `builder`, or, if read before a restart, `resumed` / `again`.

        The common message, one valid reading of a known sensor sent once, is taken inline: at
        100k messages/s every call and object per message shows. Anything else goes through
        `_redelivered` and `_take`, whose checks and dead-letter reasons are the reference."""
        floors: dict[tuple[str, int], int] = {}
        decode = FAST_READING.decode
        known = self.engine.index.get
        owner = self.engine.sensor_site_names
        idx, ts, value, good, origin, slot = (
            builder.idx,
            builder.ts,
            builder.value,
            builder.good,
            builder.origin,
            builder.slot,
        )
        newest_ms = now_ms + self.future_ms
        for m in messages:
            tp = (m.topic, m.partition)
            floor = floors.get(tp)
            if floor is None:
                floor = floors[tp] = max(self.last_offset.get(tp, -1), self.restored_to.get(tp, -1))
            if m.offset <= floor:
                handled = self._redelivered(m)
                if handled is not None:
                    self._take(m, resumed, None, now_ms, again=again, handled=handled)
                    continue
            raw = m.value
            if raw is not None and b'"readings"' not in raw:  # what decode_fast would try as a frame first
                try:
                    r = decode(raw)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    r = None
                if r is not None and r.ts <= newest_ms:
                    i = known(r.sensor_id)
                    if i is not None and owner[i] == r.site_id:
                        idx.append(i)
                        ts.append(r.ts)
                        value.append(r.value)
                        good.append(r.quality != "bad")
                        origin.append(m)
                        slot.append(-1)
                        continue
            self._take(m, builder, dead, now_ms)
        # A partition's messages come in offset order: its newest is its last.
        for tp, offset in {(m.topic, m.partition): m.offset for m in messages}.items():
            self.last_offset[tp] = max(self.last_offset.get(tp, -1), offset)

    def _take(
        self,
        m: Consumed,
        builder: BatchBuilder,
        dead: list | None,
        now_ms: int,
        *,
        again: BatchBuilder | None = None,
        handled: int = NEVER,
    ) -> None:
        """Decode one message into `builder`; what is refused goes to `dead` (None: already dead-lettered once).
        A message whose event time is at or before `handled` goes to `again` instead (its rules already ran)."""

        def refuse(reason: str, detail: str, key: str | None, payload: dict | None = None) -> None:
            if dead is not None:
                rec = deadletter_record(reason, detail, m, payload=payload, site_id=key)
                # the record's site id, already cut: an input's own id can be any size
                dead.append((reason, rec, (rec["site_id"] or "").encode() or (m.key or b"")[:128]))

        if m.value is None:
            refuse("empty_message", "message has no value", None)
            return
        # The common case, a valid message, is decoded cheaply; the rest goes through the models,
        # whose errors name the field, and a frame with bad readings keeps its good ones.
        msg: Frame | Reading | FastFrame | FastReading | None = decode_fast(m.value)
        if msg is None:
            try:
                msg = decode_message(m.value)
            except DecodeError as exc:
                frame, bad = self._salvage(m, exc)
                if frame is None and not bad:
                    refuse(exc.reason, exc.detail, exc.site_id)
                    return
                for item, detail in bad:
                    refuse("invalid_field", detail, exc.site_id, item)
                if frame is None:
                    return
                msg = frame
        if msg.ts > now_ms + self.future_ms:
            ahead = (msg.ts - now_ms) / 1000
            refuse(
                "future",
                f"ts: event time {msg.ts} is {ahead:,.0f} s ahead of this worker's clock (tolerance "
                f"{self.settings.future_tolerance_s:g} s){ts_hint(msg.ts)}",
                msg.site_id,
            )
            return
        (again if again is not None and msg.ts <= handled else builder).add(msg, origin=m)

    def _late(self, batch: Batch, p: int) -> tuple[str, dict, bytes]:
        """The dead-letter of reading `p`, too far behind its sensor's newest."""
        m, slot = batch.origin[p], batch.slot[p]
        sensor, site = self.engine.sensor_ids[int(batch.idx[p])], self.engine.sensor_site_names[int(batch.idx[p])]
        item = _frame_item(m.value, slot, sensor) if slot >= 0 and m.value else None  # the input reading, as sent
        where = f"readings.{slot}: " if slot >= 0 else ""
        ts = int(batch.ts[p])
        detail = (
            f"{where}sensor {sensor}: event time {ts} is more than {self.settings.lateness_s:g} s behind "
            f"the sensor's newest reading{ts_hint(ts)}"
        )
        return "late", deadletter_record("late", detail, m, payload=item, site_id=site), site.encode()

    def _redelivered(self, m: Consumed) -> int | None:
        """Up to which event time a message's readings were handled already (None: a new message).

        A message at or before the one its site's checkpoint was written after: all of it (its rules
        ran in this worker before a restart, or in another before a rebalance). One after that, up
        to the newest the checkpoint had read: its readings up to the site's watermark then; the
        rest were held by the reorder buffer and are evaluated now. Either way it was dead-lettered
        where it had to be."""
        if m.key is None:
            return None
        site = m.key.decode(errors="replace")
        src = self.site_offset.get(site)
        if src is None or src[0] != m.topic or src[1] != m.partition:
            return None
        if m.offset <= src[2]:
            return EVERYTHING
        if not self.resume:  # the common case: no checkpoint written with a hold
            return None
        seen, watermark = self.resume.get(site, (-1, NEVER))
        return watermark if m.offset <= seen else None

    async def tick(self) -> None:
        """Timer: pick up changed rule files, send spooled points, then move the engine's clock."""
        rules = self.reloader.correlation_rules
        self.reloader.maybe_reload(self.engine)
        if self.reloader.correlation_rules is not rules:
            # A scope level that gained (or lost) its rules is re-keyed for the scope stage from now on.
            self.scopes = emitted_scopes(self.settings, self.reloader.correlation_rules)
        if self.writer is not None:
            await self.writer.drain()
        if self.events_writer is not None:
            await self.events_writer.drain()
        await self._update_liveness()
        await self.release_due()
        clocks = self.site_clocks()
        if clocks is None:
            return
        if self.reorder is not None:
            # Timers must not run ahead of readings still held: a site's clock stops at its watermark.
            clocks = np.minimum(clocks, self.reorder.released_to)
        result = self.engine.advance(int(clocks.max()), clocks)
        if result.hazards or result.incidents or result.notices:
            await self._emit(result, [])

    @property
    def holding(self) -> bool:
        """Are readings waiting in the reorder buffer?"""
        return self.reorder is not None and len(self.reorder) > 0

    async def release_due(self) -> None:
        """Evaluate the held readings whose site's watermark has passed them (a quiet site's runs on by
        wall time), so a site that stops sending does not keep its last readings held."""
        if not self.holding:
            return
        assert self.reorder is not None
        batch = self.reorder.release(self._watermarks())
        HELD.set(len(self.reorder))
        if len(batch):
            result = self.engine.process(batch)
            await self._emit(result, [self._late(batch, p) for p in result.late.tolist()])

    def _watermarks(self) -> np.ndarray:
        """Per site: the newest event time seen there less the hold, plus the wall time since that
        reading arrived once its partition has been caught up (the backlog after a restart or a
        rebalance moves it by its data alone). Not only while caught up: under steady load aiokafka's
        prefetch often shows a high-water mark ahead of what was read, which would hold each reading
        until its site's next one."""
        assert self.reorder is not None
        seen = np.maximum(self.reorder.site_seen, self.engine.site_last_ts)
        running = (self._seen_wall > 0) & self._site_caught
        elapsed = np.where(running, (time.monotonic() - self._seen_wall) * 1000, 0).astype(np.int64)
        return np.where(seen > NEVER, seen - self.hold_ms + elapsed, NEVER)

    def committable(self, topic: str, partition: int, offset: int) -> int:
        """The offset to commit on a partition whose messages before `offset` were handled: no further
        than its oldest message with a reading still held (its work is not done)."""
        if self.reorder is None:
            return offset
        held = self.reorder.held_from(self.partition_sites.get((topic, partition), []))
        return offset if held is None else min(offset, held)

    def site_clocks(self) -> np.ndarray | None:
        """Event time now, per site. On a partition that is caught up: the site's newest reading plus
        the wall time since it arrived, less a safety lag. On one still being caught up (a restart
        with a backlog): the newest reading alone, so the data, not the wall, moves the clock and
        nothing looks silent that is only unread. Sites never seen stay at the engine's "never"."""
        if not self._seen_wall.any():
            return None
        elapsed = (time.monotonic() - self._seen_wall) * 1000 - self.settings.clock_lag_s * 1000
        running = (self._seen_wall > 0) & self._site_live
        return np.where(
            running, self.engine.site_last_ts + np.maximum(elapsed, 0).astype(np.int64), self.engine.site_last_ts
        )

    async def _update_liveness(self) -> None:
        """Which of our partitions are caught up; a partition that just caught up starts its sites' clocks."""
        if self.caught_up is None:
            self._site_live[:] = True
            self._site_caught[:] = True
            return
        now = time.monotonic()
        for tp, rows in self.partition_sites.items():
            live = await self.caught_up(tp[0], tp[1], self.last_offset.get(tp))
            if live and not self.live.get(tp, False):
                self._seen_wall[rows] = np.where(self._seen_wall[rows] > 0, now, 0)
            self.live[tp] = live
            self._site_live[rows] = live
            self._site_caught[rows] |= live

    def adopt(self, site_id: str, topic: str, partition: int, snapshot: dict | None) -> None:
        """This worker now owns a site (on this telemetry partition): restore its checkpoint, if any."""
        row = self.engine.site_row[site_id]
        self.partition_sites.setdefault((topic, partition), []).append(row)
        if snapshot is not None:
            self.engine.restore_site(site_id, snapshot)
            src = snapshot.get("src")
            if src:
                self.site_offset[site_id] = (src[0], int(src[1]), int(src[2]))
                covered = max(int(src[2]), int(src[3]) if len(src) >= 5 else -1)
                self.restored_to[(src[0], int(src[1]))] = max(self.restored_to.get((src[0], int(src[1])), -1), covered)
                if len(src) >= 5:  # written with a reorder hold: what was read and how far it was evaluated
                    self.resume[site_id] = (int(src[3]), int(src[4]))
                    if self.reorder is not None:
                        self.reorder.released_to[row] = int(src[4])
            if self.engine.site_last_ts[row] > NEVER:
                self._seen_wall[row] = time.monotonic()
                # Start-up grace on the site's own clock, which starts here at its newest reading.
                grace_ms = int(self.settings.site_offline_grace_s * 1000)
                self.engine.hold_offline(site_id, int(self.engine.site_last_ts[row]) + grace_ms)

    def release(self, topic: str, partition: int) -> list[str]:
        """The partition went to another worker: forget its sites' state; returns their ids."""
        rows = self.partition_sites.pop((topic, partition), [])
        sites = [self.engine.site_ids[r] for r in rows]
        self.dirty.difference_update(sites)
        for site in sites:
            self.engine.restore_site(site, EMPTY_SNAPSHOT)
            self.site_offset.pop(site, None)
            self.resume.pop(site, None)
        if self.reorder is not None:
            # Not evaluated here: their offsets were not committed, so the new owner reads them again.
            self.reorder.forget(rows)
            HELD.set(len(self.reorder))
        self._seen_wall[rows] = 0
        self._site_live[rows] = False
        self._site_caught[rows] = False
        self.live.pop((topic, partition), None)
        self.last_offset.pop((topic, partition), None)
        return sites

    async def checkpoint(self, sites: list[str] | None = None) -> None:
        """Checkpoint every site changed since its last checkpoint (or `sites`), after the events before it.

        The caller commits offsets only after this: a restart then finds every committed message
        covered by its site's checkpoint (treated as redelivered), and re-evaluates only what
        came after, re-emitting at most the same events (their ids are stable) and never a gap.
        """
        # Readings and events first: a checkpoint on the broker says what it covers is stored and sent.
        await self.stored()
        await self.flush()
        chosen = sorted(self.dirty) if sites is None else sites
        # Serialised before the first send: the snapshots share containers with the live state.
        blobs = [(site, self._checkpoint(site, snap)) for site, snap in self.engine.snapshot_sites(chosen).items()]
        for site, blob in blobs:
            await self.send(self.checkpoint_topic, site.encode(), blob)
            self.dirty.discard(site)
        await self.flush()

    async def stored(self) -> None:
        """Wait until every handled batch's points are in InfluxDB or its spool; a write's error is raised here."""
        while self.storing:
            await self.storing.popleft()

    def _checkpoint(self, site_id: str, snap: dict) -> bytes:
        """A site's checkpoint: its rule state and the newest telemetry offset it covers."""
        src = self.site_offset.get(site_id)
        if src is not None and self.reorder is None:
            snap["src"] = list(src)
        elif src is not None and self.reorder is not None:
            # With a hold the evaluated readings are not a prefix of the offsets: the checkpoint covers
            # every message up to its oldest held one, and those after it up to the newest read only
            # up to the watermark (a restart evaluates the rest of them, and nothing twice).
            row = self.engine.site_row[site_id]
            held = self.reorder.held_from([row])
            seen, _ = self.resume.get(site_id, (-1, NEVER))
            done = src[2] if held is None else min(src[2], held - 1)
            snap["src"] = [src[0], src[1], done, max(src[2], seen), int(self.reorder.released_to[row])]
        return orjson.dumps(snap)

    def _observe(self, messages: Sequence[Consumed], batch: Batch) -> None:
        """Sites that got readings: their clocks restart from now. Remember each site's newest offset,
        a message refused whole included (with a hold, a restart may read it again: not to dead-letter
        it twice)."""
        if len(batch):
            self._seen_wall[np.unique(self.engine.sensor_site[batch.idx])] = time.monotonic()
        # A site's messages share a partition and come in offset order: its last here is its newest.
        for key, m in {m.key: m for m in messages}.items():
            site = key.decode(errors="replace") if key else None
            if site in self.engine.site_row:
                src = self.site_offset.get(site)
                if src is None or src[:2] != (m.topic, m.partition) or m.offset > src[2]:
                    self.site_offset[site] = (m.topic, m.partition, m.offset)
                    self.dirty.add(site)  # its checkpoint says how far it was read, held readings or not

    async def _store_readings(self, batch: Batch, late: np.ndarray, redelivered: Batch) -> None:
        """Write the batch's readings, all but the late (dead-lettered) ones, and the redelivered ones
        (their first write may not have completed; a point written twice is the same point)."""
        if self.writer is None or not self.settings.influx_write_readings:
            return
        if len(redelivered):
            await self.writer.write(
                reading_lines(
                    self.prefixes,
                    redelivered.idx.tolist(),
                    redelivered.ts.tolist(),
                    redelivered.value.tolist(),
                    redelivered.good.tolist(),
                )
            )
        if not len(batch):
            return
        keep = np.ones(len(batch), dtype=bool)
        keep[late] = False
        lines = reading_lines(
            self.prefixes,
            batch.idx[keep].tolist(),
            batch.ts[keep].tolist(),
            batch.value[keep].tolist(),
            batch.good[keep].tolist(),
        )
        await self.writer.write(lines + self._setpoint_lines(batch.idx[keep], batch.ts[keep]))

    def _setpoint_lines(self, idx: np.ndarray, ts: np.ndarray) -> list[str]:
        """Each sensor's set points, stamped with a reading's time, once every `influx_setpoint_every_s` of it."""
        due = ts >= self._setpoint_due[idx]
        if not due.any():  # the common case: one vector compare per batch
            return []
        every = int(self.settings.influx_setpoint_every_s * 1000)
        out = []
        for i, t in zip(idx[due].tolist(), ts[due].tolist(), strict=True):
            if t >= self._setpoint_due[i]:  # a sensor twice in a batch: once (only sensors with set points get due)
                self._setpoint_due[i] = t + every
                out.append(f"{self.setpoint_heads[i]} {t}")
        return out

    async def _emit(self, result, dead) -> None:
        # Alerts first: nothing below may delay a duty officer's hazard or incident.
        for h in result.hazards:
            await self.send(self.hazards_topic, h.site_id.encode(), h.to_json())
            HAZARDS.labels(h.event).inc()
        for inc in result.incidents:
            await self.send(self.incidents_topic, inc.site_id.encode(), inc.to_json())
            INCIDENTS.labels(inc.status).inc()
        for n in result.notices:
            await self.send(self.notices_topic, n.site_id.encode(), n.to_json())
            NOTICES.labels(n.status).inc()
        # The repartition: in stage 1's causal order, so each scope key sees a site's events in order.
        if self.scopes:
            for ev in result.events:
                for rec in scope_records(ev, self.scopes):
                    await self.send(self.scope_topic, rec.state_key.encode(), rec.to_json())

        reasons: Counter = Counter()
        for reason, rec, key in dead:
            await self.send(self.deadletter_topic, key, orjson.dumps(rec))
            reasons[reason] += 1
        for reason, n in reasons.items():
            DEADLETTERS.labels(reason).inc(n)
        for why, n in result.skipped.items():
            if n:
                SKIPPED.labels(why).inc(n)
        self.dirty.update(result.sites)

        if self.writer is not None:
            lines = self._lines(result, reasons)
            copies = [self.writer.write(lines)]
            if self.events_writer is not None and lines:
                copies.append(self.events_writer.write(lines))
            self.storing.append(asyncio.ensure_future(asyncio.gather(*copies)))

    def _salvage(self, m: Consumed, exc: DecodeError):
        """For a frame with some bad readings: the good ones as a frame, the bad ones with reasons."""
        if exc.reason != "invalid_field" or m.value is None:
            return None, []
        obj = orjson.loads(m.value)
        if not isinstance(obj.get("readings"), list):
            return None, []
        return split_frame(obj)

    def _lines(self, result, reasons: Counter) -> list[str]:
        """Hazard, incident (event and state), notice and dead-letter points of a batch (readings elsewhere)."""
        lines: list[str] = []
        lines.extend(hazard_line(h) for h in result.hazards)
        lines.extend(incident_line(i) for i in result.incidents)
        lines.extend(incident_state_line(i) for i in result.incidents)
        lines.extend(notice_line(n) for n in result.notices)
        now = int(time.time() * 1000)
        lines.extend(deadletter_line(reason, "telemetry", n, now) for reason, n in reasons.items())
        return lines
