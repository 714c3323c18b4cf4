"""The feed in InfluxDB: each gateway flushes its counts every `feed_flush_s`; `/v1/feed` reads them back.

Measurements `ingest_count`, `ingest_sensor`, `ingest_refusal`, `ingest_skew` (docs/influx-schema.md),
written to the database's default policy through the v1 HTTP API like every other point. A write
that fails is kept and sent with the next flush; a gateway killed loses at most one interval.
(`ingest/` may not import `streams/`, hence its own few lines of line protocol here.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import httpx

from config.settings import Settings
from sensors.registry import Registry

from .feed import DAY_MS, EXAMPLES_PER_REASON, HOUR_MS, Feed, Pending, Seen

log = logging.getLogger(__name__)


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _str(value: str | None) -> str:
    return '"' + (value or "").replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def feed_lines(p: Pending, registry: Registry, instance: str, now_ms: int) -> list[str]:
    """Line protocol for one flush (`instance`: this gateway, so gateways' counts add up, never overwrite)."""
    gw = _tag(instance)
    lines = [
        f"ingest_count,enterprise_id={_tag(e)},ingest={gw},result={_tag(r)} count={n}i {now_ms}"
        for (e, r), n in sorted(p.counts.items())
    ]
    for sensor_id, (e, ts, at) in p.sensors.items():
        site = registry.sensors[sensor_id].site_id
        lines.append(
            f"ingest_sensor,enterprise_id={_tag(e)},sensor_id={_tag(sensor_id)},site_id={_tag(site)} ts={ts}i {at}"
        )
    for (e, reason), xs in p.examples.items():
        at = 0
        for x in xs:  # one point per example: stamps kept distinct, or a later one would overwrite
            at = max(x["at"], at + 1)
            fields = ",".join(f"{k}={_str(x[k])}" for k in ("via", "field", "detail", "input"))
            lines.append(f"ingest_refusal,enterprise_id={_tag(e)},ingest={gw},reason={_tag(reason)} {fields} {at}")
    for (e, gateway), (skew, at) in p.skew.items():
        lines.append(f"ingest_skew,enterprise_id={_tag(e)},gateway={_tag(gateway)} skew_ms={skew}i {at}")
    return lines


class FeedStore:
    """Writes a gateway's feed to InfluxDB and reads every gateway's back."""

    def __init__(self, settings: Settings, registry: Registry, feed: Feed):
        self.settings = settings
        self.registry = registry
        self.feed = feed
        self.params: dict[str, str] = {"db": settings.influx_db}
        headers: dict[str, str] = {}
        if settings.influx_token:
            headers["Authorization"] = f"Token {settings.influx_token}"
        elif settings.influx_user:
            self.params.update(u=settings.influx_user, p=settings.influx_password or "")
        self.client = httpx.AsyncClient(base_url=settings.influx, headers=headers, timeout=settings.influx_timeout_s)

    async def flush(self) -> bool:
        """Write what is pending; True if it is stored (or there was nothing)."""
        pending = self.feed.take()
        ok = True
        if not pending.empty():
            lines = feed_lines(pending, self.registry, self.settings.ingest_instance_name, _now_ms())
            try:
                resp = await self.client.post(
                    "/write", params={**self.params, "precision": "ms"}, content="\n".join(lines).encode()
                )
                ok = resp.status_code == 204
                if not ok:
                    log.warning("InfluxDB refused the feed flush: HTTP %d %s", resp.status_code, resp.text[:200])
            except httpx.HTTPError as exc:
                ok = False
                log.warning("feed flush to InfluxDB failed (%r); kept for the next one", exc)
        self.feed.done(ok)
        return ok

    async def run(self) -> None:
        """Flush every `feed_flush_s` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.settings.feed_flush_s)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def seen(self, enterprise_id: str, now_ms: int) -> Seen:
        """Every gateway's stored feed of one enterprise, plus this gateway's unflushed part."""
        e = _literal(enterprise_id)
        day, hour = f"time > {now_ms - DAY_MS}ms", f"time > {now_ms - HOUR_MS}ms"
        statements = [
            f'SELECT sum("count") FROM "ingest_count" WHERE "enterprise_id" = {e} AND {hour} GROUP BY "result"',
            f'SELECT sum("count") FROM "ingest_count" WHERE "enterprise_id" = {e} AND {day} GROUP BY "result"',
            f'SELECT last("ts") FROM "ingest_sensor" WHERE "enterprise_id" = {e} GROUP BY "sensor_id"',
            f'SELECT "via", "field", "detail", "input" FROM "ingest_refusal" WHERE "enterprise_id" = {e} AND {day} '
            f'GROUP BY "reason" ORDER BY time DESC LIMIT {EXAMPLES_PER_REASON}',
            f'SELECT last("skew_ms") FROM "ingest_skew" WHERE "enterprise_id" = {e} AND {day} GROUP BY "gateway"',
        ]
        resp = await self.client.get("/query", params={**self.params, "q": ";".join(statements), "epoch": "ms"})
        resp.raise_for_status()
        results = resp.json().get("results", [])
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"InfluxQL error reading the feed: {errors[0]}")
        hour_s, day_s, sensors, examples, skew = (r.get("series", []) for r in results)
        seen = Seen(last_hour=_sums(hour_s), last_day=_sums(day_s))
        for s in sensors:
            at, ts = s["values"][0]
            seen.last[s["tags"]["sensor_id"]] = (int(ts), int(at))
        for s in examples:
            cols = s["columns"]
            seen.examples[s["tags"]["reason"]] = [
                {
                    "at": row[0],
                    "via": row[cols.index("via")],
                    "field": row[cols.index("field")] or None,
                    "detail": row[cols.index("detail")] or None,
                    "input": row[cols.index("input")],
                }
                for row in s["values"]
            ]
        for s in skew:
            at, value = s["values"][0]
            seen.skew[s["tags"]["gateway"]] = (int(value), int(at))
        seen.merge(self.feed.local(enterprise_id))
        return seen

    async def aclose(self) -> None:
        await self.client.aclose()


def _sums(series: list[dict]) -> Counter:
    return Counter({s["tags"]["result"]: int(s["values"][0][1]) for s in series})


def _now_ms() -> int:
    return int(time.time() * 1000)
