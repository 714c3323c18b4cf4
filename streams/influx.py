"""The one code path to InfluxDB: line protocol to `/write`, InfluxQL to `/query` (v1 HTTP API).

InfluxDB 1.x serves it natively, 2.x through a DBRP mapping, 3.x as its v1 compatibility
API. Authentication is user/password or a token. Times are written with ms precision.
"""

from __future__ import annotations

import asyncio
import logging
from typing import get_args

import aiohttp
import httpx
from prometheus_client import Counter, Gauge

from config.settings import Settings
from rules.models import SEVERITY_RANK, HazardEvent, IncidentEvent, NoticeEvent, Severity
from rules.risk import Risk

from .spool import Spool

log = logging.getLogger(__name__)


def escape_tag(value: str) -> str:
    """Escape a tag key or value for line protocol."""
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def escape_str(value: str) -> str:
    """Quote a string field value for line protocol."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tags(measurement: str, **kv: str | None) -> str:
    """`measurement,k=v,...` with keys sorted, as InfluxDB prefers."""
    return measurement + "".join(f",{k}={escape_tag(str(v))}" for k, v in sorted(kv.items()) if v not in (None, ""))


def reading_lines(
    prefixes: list[str], idx: list[int], ts: list[int], values: list[float], good: list[bool]
) -> list[str]:
    """Lines for a batch of readings; `prefixes[i]` is sensor i's precomputed measurement+tags.

    A bad-quality reading gets the tag `quality=bad` (its own, rare series) rather than every
    point carrying a quality field: a second field per point cost InfluxDB ~40 % of its write rate."""
    return [
        f"{prefixes[i]} value={v!r} {t}" if g else f"{prefixes[i]},quality=bad value={v!r} {t}"
        for i, t, v, g in zip(idx, ts, values, good, strict=False)
    ]


def setpoint_head(reading_prefix: str, set_points: dict[str, float]) -> str | None:
    """`setpoint,<the reading's tags> high=…,…` for a sensor (its time is added per point); None without set points."""
    if not set_points:
        return None
    fields = ",".join(f"{name}={float(v)!r}" for name, v in set_points.items())
    return "setpoint" + reading_prefix.removeprefix("reading") + " " + fields


def hazard_line(h: HazardEvent) -> str:
    """One hazard open/clear event as a point."""
    head = tags(
        "hazard",
        site_id=h.site_id,
        sensor_id=h.sensor_id,
        sector=h.sector,
        region=h.region,
        enterprise_id=h.enterprise_id,
        kind=h.kind,
        event=h.event,
        severity=h.severity,
    )
    optional = "".join(f",{name}={v!r}" for name, v in (("value", h.value), ("peak", h.peak)) if v is not None)
    end = f",end={h.end}i" if h.end is not None else ""
    flap = f",flap_count={h.flap_count}i" if h.flapping else ""
    return (
        f"{head} hazard_id={escape_str(h.hazard_id)},level={h.level}i{optional},threshold={h.threshold!r},"
        f"start={h.start}i{end}{flap},rule_id={escape_str(h.rule_id)} {h.ts}"
    )


def incident_line(inc: IncidentEvent) -> str:
    """One incident state change as a point."""
    head = tags(
        "incident",
        site_id=inc.site_id,
        sector=inc.sector,
        region=inc.region,
        enterprise_id=inc.enterprise_id,
        status=inc.status,
        severity=inc.severity,
        scope=None if inc.scope == "site" else inc.scope,  # a site incident's series are as before
    )
    return (
        f"{head} incident_id={escape_str(inc.incident_id)},hazards={len(inc.hazard_ids)}i,"
        f"open_hazards={len(inc.open_hazard_ids)}i,rule_id={escape_str(inc.rule_id)} {inc.updated_at}"
    )


COLOURS: tuple[str, ...] = get_args(Severity)  # red, orange, yellow, blue


def incident_state_line(inc: IncidentEvent) -> str:
    """The incident's state after a change, in a series of its own so `last()` per incident is its state now."""
    # `incident` has the id as a field, so InfluxQL cannot take each incident's last point; here it is
    # a tag. Incidents are rare (tens a day), so a series per incident costs InfluxDB little.
    # InfluxQL has no conditional sum: the wall counts colours by summing 0/1 fields.
    head = tags(
        "incident_state",
        incident_id=inc.incident_id,
        site_id=inc.site_id,
        sector=inc.sector,
        region=inc.region,
        enterprise_id=inc.enterprise_id,
        scope=None if inc.scope == "site" else inc.scope,
    )
    is_open = inc.status != "closed"
    flags = "".join(f",open_{c}={int(is_open and inc.severity == c)}i" for c in COLOURS)
    return (
        f"{head} status={escape_str(inc.status)},severity={escape_str(inc.severity)},open={int(is_open)}i{flags},"
        f"opened_at={inc.opened_at}i {inc.updated_at}"
    )


def risk_line(r: Risk, region: str) -> str:
    """An enterprise's risk colour after a change (written only when it changes)."""
    head = tags("enterprise_risk", enterprise_id=r.enterprise_id, region=region, supervision_class=r.supervision_class)
    return (
        f"{head} colour={escape_str(r.colour)},rank={SEVERITY_RANK[r.colour]}i,open_incidents={r.open_incidents}i,"
        f"open_hazards={r.open_hazards}i,reason={escape_str(r.reason)} {r.ts}"
    )


def notice_line(n: NoticeEvent) -> str:
    """One maintenance notice state change as a point; its id is a tag, so `last()` per notice is its state now."""
    # Notices are few (one per site with an instrument problem), so a series per notice is cheap.
    head = tags(
        "notice",
        notice_id=n.notice_id,
        site_id=n.site_id,
        sector=n.sector,
        region=n.region,
        enterprise_id=n.enterprise_id,
    )
    kinds = ",".join(sorted({f.kind for f in n.faults}))
    return (
        f"{head} status={escape_str(n.status)},severity={escape_str(n.severity)},open={int(n.status != 'closed')}i,"
        f"faults={len(n.faults)}i,hazards={len(n.hazard_ids)}i,kinds={escape_str(kinds)},"
        f"title={escape_str(n.title)},opened_at={n.opened_at}i {n.updated_at}"
    )


def deadletter_line(reason: str, topic: str, count: int, ts_ms: int) -> str:
    """Dead-lettered messages of one reason, counted per batch."""
    return f"{tags('deadletter', reason=reason, topic=topic)} count={count}i {ts_ms}"


def _auth(settings: Settings) -> tuple[dict, dict]:
    params: dict[str, str] = {"db": settings.influx_db}
    headers: dict[str, str] = {}
    if settings.influx_token:
        headers["Authorization"] = f"Token {settings.influx_token}"
    elif settings.influx_user:
        params.update(u=settings.influx_user, p=settings.influx_password or "")
    return params, headers


SPOOL_BYTES = Gauge("safewatch_influx_spool_bytes", "Line protocol waiting in the local spool for InfluxDB")
SPOOLED = Counter("safewatch_influx_spooled_points_total", "Points InfluxDB did not take at once, spooled to disk")
SPOOL_FULL = Counter("safewatch_influx_spool_full_total", "Times the spool was full and the worker waited")


class InfluxWriter:
    """Writes line protocol in chunks; what InfluxDB does not take goes to a durable spool, sent later in order.

    `write` returns only when every line is in InfluxDB or in the spool, so the caller may then
    acknowledge its batch. Points InfluxDB refuses as malformed (HTTP 4xx) are counted and logged."""

    def __init__(self, settings: Settings, *, attempts: int = 3, spool: Spool | None = None):
        self.settings = settings
        self.attempts = attempts
        params, headers = _auth(settings)
        self.params = {**params, "precision": "ms"}
        if settings.influx_rp:  # else the database's default policy (`raw` on the embedded stack)
            self.params["rp"] = settings.influx_rp
        self.headers = headers
        self.write_url = settings.influx.rstrip("/") + "/write"
        # aiohttp, not httpx: ~0.15 against ~0.9 ms of CPU per write measured here, and the worker
        # writes every batch. Made on first use: a session belongs to the running event loop.
        self.client: aiohttp.ClientSession | None = None
        self.spool = spool or Spool(settings.spool_dir, settings.influx_spool_max_bytes)
        self.points_written = 0
        self.points_failed = 0
        self._draining = asyncio.Lock()

    async def write(self, lines: list[str]) -> None:
        """Write lines in chunks of `influx_batch_points`, a few at once; spool what does not go through."""
        if not lines:
            return
        step = self.settings.influx_batch_points
        chunks = ["\n".join(lines[start : start + step]).encode() for start in range(0, len(lines), step)]
        if self.spool.holding():
            # InfluxDB was down: keep the order, spool behind what is already waiting.
            for body in chunks:
                self._to_spool(body)
            await self.drain(wait_if_full=True)
            return
        # InfluxDB parses concurrent writes on several cores; one at a time leaves them idle
        # while the worker waits (measured: the reading write halved throughput when serial).
        gate = asyncio.Semaphore(self.settings.influx_write_concurrency)

        async def one(body: bytes) -> None:
            async with gate:
                if not await self._post(body, self.attempts):
                    self._to_spool(body)

        await asyncio.gather(*(one(c) for c in chunks))
        if self.spool.holding():
            await self.drain(wait_if_full=True)

    def _to_spool(self, body: bytes) -> None:
        self.spool.append(body)
        SPOOLED.inc(body.count(b"\n") + 1)
        SPOOL_BYTES.set(self.spool.size())

    async def drain(self, *, wait_if_full: bool = False) -> int:
        """Send spooled chunks oldest first until one fails; returns how many went.

        With `wait_if_full`, a full spool is drained until below its limit before returning:
        the worker stops consuming rather than dropping points."""
        sent = 0
        async with self._draining:
            warned = False
            while True:
                for segment in self.spool.segments():
                    body = self.spool.read(segment)
                    if body is None:
                        continue
                    if not await self._post(body, 1):
                        break
                    self.spool.done(segment)
                    sent += 1
                size = self.spool.size()
                SPOOL_BYTES.set(size)
                if not wait_if_full or size < self.spool.max_bytes:
                    return sent
                if not warned:
                    SPOOL_FULL.inc()
                    log.error(
                        "InfluxDB spool full (%d bytes in %s): consuming paused until InfluxDB takes it",
                        size,
                        self.spool.directory,
                    )
                    warned = True
                await asyncio.sleep(1.0)

    async def _post(self, body: bytes, attempts: int) -> bool:
        """One chunk to InfluxDB; True when it is stored (or refused as malformed, which no retry mends)."""
        delay = 0.2
        n = body.count(b"\n") + 1
        for attempt in range(1, attempts + 1):
            try:
                async with self._session().post(self.write_url, params=self.params, data=body) as resp:
                    if resp.status == 204:
                        self.points_written += n
                        return True
                    text = await resp.text(errors="replace")
                if 400 <= resp.status < 500:  # bad points: retrying will not help
                    log.error("InfluxDB refused %d points: %s", n, text[:300])
                    self.points_failed += n
                    return True
                err = f"HTTP {resp.status}: {text[:200]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                err = repr(exc)
            log.warning("InfluxDB write attempt %d/%d failed: %s", attempt, attempts, err)
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return False

    def _session(self) -> aiohttp.ClientSession:
        if self.client is None or self.client.closed:
            self.client = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.settings.influx_timeout_s)
            )
        return self.client

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self.client is not None:
            await self.client.close()


def query(settings: Settings, q: str, *, timeout: float = 30.0) -> list[dict]:
    """Run InfluxQL and return the series of the first statement (`[]` when empty)."""
    params, headers = _auth(settings)
    resp = httpx.get(
        f"{settings.influx}/query", params={**params, "q": q, "epoch": "ms"}, headers=headers, timeout=timeout
    )
    resp.raise_for_status()
    results = resp.json().get("results", [])
    if results and "error" in results[0]:
        raise RuntimeError(f"InfluxQL error: {results[0]['error']} (query: {q})")
    return results[0].get("series", []) if results else []


def rows(series: list[dict]) -> list[dict]:
    """Flatten query series into dicts of column → value (tags included)."""
    out = []
    for s in series:
        for values in s.get("values", []):
            out.append({**s.get("tags", {}), **dict(zip(s["columns"], values, strict=False))})
    return out
