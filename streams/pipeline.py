"""One batch of telemetry messages: validate → rules → hazards, incidents, dead-letter, storage.

Kept apart from Faust so the order of work per batch is easy to read: alerts first (a duty
officer waits on them), then dead-letters and the rule-state checkpoint, then InfluxDB. The
batch is acknowledged (offsets may commit) only after all of it is done.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import orjson
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from rules.engine import NEVER, RuleEngine
from safewatch.settings import CHECKPOINT_TOPIC, DEADLETTER_TOPIC, HAZARDS_TOPIC, INCIDENTS_TOPIC, Settings
from sensors.schema import DecodeError, decode_message, split_frame

from .reload import RuleReloader
from .influx import InfluxWriter, deadletter_line, hazard_line, incident_line, reading_lines, tags

log = logging.getLogger(__name__)

READINGS = PromCounter("safewatch_readings_total", "Readings evaluated or stored")
MESSAGES = PromCounter("safewatch_messages_total", "Telemetry messages consumed")
DEADLETTERS = PromCounter("safewatch_deadletter_total", "Dead-lettered readings or messages", ["reason"])
SKIPPED = PromCounter("safewatch_rule_skipped_total", "Readings stored but not evaluated", ["why"])
HAZARDS = PromCounter("safewatch_hazard_events_total", "Hazard events emitted", ["event"])
INCIDENTS = PromCounter("safewatch_incident_events_total", "Incident events emitted", ["status"])
BATCH_SECONDS = Histogram("safewatch_batch_seconds", "Time to handle one batch",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

Send = Callable[[str, bytes, bytes], Awaitable[None]]
Flush = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@dataclass
class RawMessage:
    """A consumed telemetry message, whatever its content."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def deadletter_record(reason: str, detail: str, m: RawMessage, *, payload: dict | None = None,
                      site_id: str | None = None) -> dict:
    """What the dead-letter topic carries: why, where from, and the input itself."""
    rec = {"reason": reason, "detail": detail, "topic": m.topic, "partition": m.partition, "offset": m.offset,
           "site_id": site_id, "received_at": int(time.time() * 1000)}
    if payload is not None:
        rec["reading"] = payload
    elif m.value is not None:
        try:
            rec["raw"] = m.value.decode()
        except UnicodeDecodeError:
            rec["raw_b64"] = base64.b64encode(m.value).decode()
    return rec


class Pipeline:
    """Handles batches for one worker; holds the engine and the output paths."""

    def __init__(self, settings: Settings, engine: RuleEngine, send: Send, writer: InfluxWriter | None,
                 reloader: RuleReloader | None = None, flush: Flush | None = None):
        self.settings = settings
        self.engine = engine
        self.send = send
        self.flush = flush or _nothing
        self.writer = writer
        self.hazards_topic = settings.topic(HAZARDS_TOPIC)
        self.incidents_topic = settings.topic(INCIDENTS_TOPIC)
        self.deadletter_topic = settings.topic(DEADLETTER_TOPIC)
        self.checkpoint_topic = settings.topic(CHECKPOINT_TOPIC)
        self.prefixes = [self._prefix(s) for s in engine.sensors]
        self.totals: Counter = Counter()
        self.reloader = reloader or RuleReloader(settings)
        self._seen_wall = np.zeros(len(engine.site_ids))  # monotonic time each site's newest reading arrived

    def _prefix(self, sensor) -> str:
        info = self.engine.site_info[sensor.site_id]
        return tags("reading", sensor_id=sensor.id, site_id=sensor.site_id, sector=info.sector, region=info.region,
                    enterprise_id=info.enterprise_id, quantity=sensor.quantity, unit=sensor.unit, area=sensor.area)

    async def handle(self, messages: list[RawMessage]) -> None:
        """Process one batch end to end."""
        started = time.perf_counter()
        builder = self.engine.new_batch()
        dead: list[tuple[str, dict, bytes]] = []  # (reason, record, key)

        for m in messages:
            if m.value is None:
                dead.append(("empty_message", deadletter_record("empty_message", "message has no value", m), m.key or b""))
                continue
            try:
                msg = decode_message(m.value)
            except DecodeError as exc:
                frame, bad = self._salvage(m, exc)
                if frame is None and not bad:
                    dead.append((exc.reason, deadletter_record(exc.reason, exc.detail, m, site_id=exc.site_id),
                                 (exc.site_id or "").encode() or (m.key or b"")))
                    continue
                for item, detail in bad:
                    dead.append(("invalid_field", deadletter_record("invalid_field", detail, m, payload=item,
                                                                    site_id=exc.site_id), (exc.site_id or "").encode()))
                if frame is None:
                    continue
                msg = frame
            builder.add(msg, origin=m)

        for r in builder.rejects:
            m = r.origin
            dead.append((r.reason, deadletter_record(r.reason, r.detail, m, payload=r.payload,
                                                     site_id=r.payload.get("site_id")),
                         str(r.payload.get("site_id", "")).encode()))

        batch = builder.build()
        result = self.engine.process(batch)
        for p in result.late.tolist():
            payload = {"sensor_id": self.engine.sensor_ids[int(batch.idx[p])], "ts": int(batch.ts[p]),
                       "value": float(batch.value[p]), "good": bool(batch.good[p])}
            site = self.engine.sensor_site_names[int(batch.idx[p])]
            detail = f"event time {payload['ts']} is more than {self.settings.lateness_s:g} s behind the sensor's newest"
            dead.append(("late", {"reason": "late", "detail": detail, "site_id": site, "reading": payload,
                                  "received_at": int(time.time() * 1000)}, site.encode()))

        self._observe_clock(batch)
        # Readings go to InfluxDB while hazards and checkpoints go to the broker; both are
        # through before we return and the caller acknowledges the batch.
        stored = asyncio.ensure_future(self._store_readings(batch, result.late))
        try:
            await self._emit(result, dead)
        finally:
            await asyncio.gather(stored, self.flush())
        MESSAGES.inc(len(messages))
        READINGS.inc(len(batch))
        self.totals.update(messages=len(messages), readings=len(batch), deadletters=len(dead))
        BATCH_SECONDS.observe(time.perf_counter() - started)

    async def tick(self) -> None:
        """Timer: pick up changed rule files, then move the engine's clock (offline, deadlines)."""
        self.reloader.maybe_reload(self.engine)
        clocks = self.site_clocks()
        if clocks is None:
            return
        result = self.engine.advance(int(clocks.max()), clocks)
        if result.hazards or result.incidents:
            await self._emit(result, [])

    def site_clocks(self) -> np.ndarray | None:
        """Event time now, per site: its newest reading's time plus the wall time since it arrived,
        less a safety lag. Sites never seen stay at the engine's "never"."""
        if not self._seen_wall.any():
            return None
        elapsed = (time.monotonic() - self._seen_wall) * 1000 - self.settings.clock_lag_s * 1000
        return np.where(self._seen_wall > 0, self.engine.site_last_ts + elapsed.astype(np.int64),
                        self.engine.site_last_ts)

    def restored(self) -> None:
        """After a checkpoint restore: restored sites' clocks run from now."""
        self._seen_wall[self.engine.site_last_ts > NEVER] = time.monotonic()

    def _observe_clock(self, batch) -> None:
        if len(batch):
            self._seen_wall[np.unique(self.engine.sensor_site[batch.idx])] = time.monotonic()

    async def _store_readings(self, batch, late: np.ndarray) -> None:
        """Write the batch's readings, all but the late (dead-lettered) ones."""
        if self.writer is None or not self.settings.influx_write_readings or not len(batch):
            return
        keep = np.ones(len(batch), dtype=bool)
        keep[late] = False
        await self.writer.write(reading_lines(self.prefixes, batch.idx[keep].tolist(), batch.ts[keep].tolist(),
                                              batch.value[keep].tolist(), batch.good[keep].tolist()))

    async def _emit(self, result, dead) -> None:
        # Alerts first: nothing below may delay a duty officer's hazard or incident.
        for h in result.hazards:
            await self.send(self.hazards_topic, h.site_id.encode(), h.to_json())
            HAZARDS.labels(h.event).inc()
        for inc in result.incidents:
            await self.send(self.incidents_topic, inc.site_id.encode(), inc.to_json())
            INCIDENTS.labels(inc.status).inc()

        reasons: Counter = Counter()
        for reason, rec, key in dead:
            await self.send(self.deadletter_topic, key, orjson.dumps(rec))
            reasons[reason] += 1
        for reason, n in reasons.items():
            DEADLETTERS.labels(reason).inc(n)
        for why, n in result.skipped.items():
            if n:
                SKIPPED.labels(why).inc(n)

        # Every site the batch touched, every batch: a restart then never sees a gap (or a stale
        # rate window) that the live worker had already seen past.
        for site in result.sites:
            await self.send(self.checkpoint_topic, site.encode(), orjson.dumps(self.engine.snapshot_site(site)))

        if self.writer is not None:
            await self.writer.write(self._lines(result, reasons))
        self.totals.update(hazards=len(result.hazards), incidents=len(result.incidents))

    def _salvage(self, m: RawMessage, exc: DecodeError):
        """For a frame with some bad readings: the good ones as a frame, the bad ones with reasons."""
        if exc.reason != "invalid_field":
            return None, []
        obj = orjson.loads(m.value)
        if not isinstance(obj.get("readings"), list):
            return None, []
        return split_frame(obj)

    def _lines(self, result, reasons: Counter) -> list[str]:
        """Hazard, incident and dead-letter points of a batch (readings: `_store_readings`)."""
        lines: list[str] = []
        lines.extend(hazard_line(h) for h in result.hazards)
        lines.extend(incident_line(i) for i in result.incidents)
        now = int(time.time() * 1000)
        lines.extend(deadletter_line(reason, "telemetry", n, now) for reason, n in reasons.items())
        return lines
