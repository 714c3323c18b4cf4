"""The one code path to InfluxDB: line protocol to `/write`, InfluxQL to `/query` (v1 HTTP API).

InfluxDB 1.x serves it natively, 2.x through a DBRP mapping, 3.x as its v1 compatibility
API. Authentication is user/password or a token. Times are written with ms precision.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from rules.models import HazardEvent, IncidentEvent
from safewatch.settings import Settings

log = logging.getLogger(__name__)


def escape_tag(value: str) -> str:
    """Escape a tag key or value for line protocol."""
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def escape_str(value: str) -> str:
    """Quote a string field value for line protocol."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tags(measurement: str, **kv: str) -> str:
    """`measurement,k=v,...` with keys sorted, as InfluxDB prefers."""
    return measurement + "".join(f",{k}={escape_tag(str(v))}" for k, v in sorted(kv.items()) if v not in (None, ""))


def reading_lines(prefixes: list[str], idx: list[int], ts: list[int], values: list[float],
                  good: list[bool]) -> list[str]:
    """Lines for a batch of readings; `prefixes[i]` is sensor i's precomputed measurement+tags.

    A bad-quality reading gets the tag `quality=bad` (its own, rare series) rather than every
    point carrying a quality field: a second field per point cost InfluxDB ~40 % of its write rate."""
    return [f"{prefixes[i]} value={v!r} {t}" if g else f"{prefixes[i]},quality=bad value={v!r} {t}"
            for i, t, v, g in zip(idx, ts, values, good)]


def hazard_line(h: HazardEvent) -> str:
    """One hazard open/clear event as a point."""
    head = tags("hazard", site_id=h.site_id, sensor_id=h.sensor_id, sector=h.sector, region=h.region,
                enterprise_id=h.enterprise_id, kind=h.kind, event=h.event, severity=h.severity)
    optional = "".join(f",{name}={v!r}" for name, v in (("value", h.value), ("peak", h.peak)) if v is not None)
    end = f",end={h.end}i" if h.end is not None else ""
    flap = f",flap_count={h.flap_count}i" if h.flapping else ""
    return (f"{head} hazard_id={escape_str(h.hazard_id)},level={h.level}i{optional},threshold={h.threshold!r},"
            f"start={h.start}i{end}{flap},rule_id={escape_str(h.rule_id)} {h.ts}")


def incident_line(inc: IncidentEvent) -> str:
    """One incident state change as a point."""
    head = tags("incident", site_id=inc.site_id, sector=inc.sector, region=inc.region,
                enterprise_id=inc.enterprise_id, status=inc.status, severity=inc.severity)
    return (f"{head} incident_id={escape_str(inc.incident_id)},hazards={len(inc.hazard_ids)}i,"
            f"open_hazards={len(inc.open_hazard_ids)}i,rule_id={escape_str(inc.rule_id)} {inc.updated_at}")


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


class InfluxWriter:
    """Writes line protocol in batches, retrying with backoff; failures are counted, not hidden."""

    def __init__(self, settings: Settings, *, retries: int = 5):
        self.settings = settings
        self.retries = retries
        params, headers = _auth(settings)
        self.params = {**params, "rp": settings.influx_rp, "precision": "ms"}
        self.client = httpx.AsyncClient(base_url=settings.influx, headers=headers, timeout=30.0)
        self.points_written = 0
        self.points_failed = 0

    async def write(self, lines: list[str]) -> None:
        """Write lines in chunks of `influx_batch_points`, a few at once, each retried before giving up."""
        step = self.settings.influx_batch_points
        chunks = [lines[start:start + step] for start in range(0, len(lines), step)]
        # InfluxDB parses concurrent writes on several cores; one at a time leaves them idle
        # while the worker waits (measured: the reading write halved throughput when serial).
        gate = asyncio.Semaphore(self.settings.influx_write_concurrency)

        async def one(chunk: list[str]) -> None:
            async with gate:
                await self._write_chunk(chunk)

        await asyncio.gather(*(one(c) for c in chunks))

    async def _write_chunk(self, chunk: list[str]) -> None:
        body = "\n".join(chunk).encode()
        delay = 0.2
        for attempt in range(1, self.retries + 1):
            try:
                resp = await self.client.post("/write", params=self.params, content=body)
                if resp.status_code == 204:
                    self.points_written += len(chunk)
                    return
                if 400 <= resp.status_code < 500:  # bad points: retrying will not help
                    log.error("InfluxDB refused %d points: %s", len(chunk), resp.text[:300])
                    self.points_failed += len(chunk)
                    return
                err = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                err = repr(exc)
            log.warning("InfluxDB write attempt %d/%d failed: %s", attempt, self.retries, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.points_failed += len(chunk)
        log.error("InfluxDB write of %d points failed after %d attempts", len(chunk), self.retries)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self.client.aclose()


def query(settings: Settings, q: str, *, timeout: float = 30.0) -> list[dict]:
    """Run InfluxQL and return the series of the first statement (`[]` when empty)."""
    params, headers = _auth(settings)
    resp = httpx.get(f"{settings.influx}/query", params={**params, "q": q, "epoch": "ms"},
                     headers=headers, timeout=timeout)
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
            out.append({**s.get("tags", {}), **dict(zip(s["columns"], values))})
    return out
