"""`safewatch bench --history`: history query latency on a generated month, raw vs downsampled.

What is generated (into its own database, `<db>_bench`, dropped first), for `sensors` sensors in
enterprises of 20 sensors (2 sites of 10) and regions of 5 enterprises, one reading per 10 s:
- `rollup_1h`: every sensor, the whole `days`;
- `rollup_1m`: every sensor, the last `minute_days`, plus the measured enterprise the whole `days`;
- `raw`: only what the raw side of the comparison reads: the measured enterprise for the whole `days`
  and the measured region for the last 7 days (every sensor at full rate for a month, ~260 M points, is
  more than this machine writes in a bench run);
- `hazard` / `incident` events: two hazards per sensor per day, one incident per site per day.
The queries are the ones history uses (history/resolution.py), timed `repeats` times each (raw: a quarter).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from config.settings import Settings

from .filters import Filters, where
from .resolution import Resolution, choose, reading_select
from .retention import RAW, ROLLUP_1H, ROLLUP_1M, ensure_retention, events_source, run
from .timefmt import now_ms

DAY = 86_400_000
PER_ENTERPRISE, PER_SITE, PER_REGION = 20, 10, 5
console = Console()


@dataclass(frozen=True)
class Sensor:
    """One generated sensor and its tags."""

    id: str
    site: str
    enterprise: str
    region: str

    def head(self, measurement: str = "reading") -> str:
        """Measurement and tags, as the worker writes them."""
        return (
            f"{measurement},area=a1,enterprise_id={self.enterprise},quantity=combustible_gas,region={self.region},"
            f"sector=hazchem,sensor_id={self.id},site_id={self.site},unit=%LEL"
        )


def sensors(n: int) -> list[Sensor]:
    """`n` sensors in enterprises, sites and regions."""
    out = []
    for i in range(n):
        e = i // PER_ENTERPRISE
        out.append(Sensor(f"b-s{i:05d}", f"b-site{i // PER_SITE:04d}", f"B{e:04d}", f"32{e // PER_REGION + 1:02d}00"))
    return out


def _rollup_lines(sens: list[Sensor], start: int, end: int, step_ms: int, per: int, rng) -> Iterator[str]:
    """Aggregates of a random walk per sensor (`per` readings in each interval)."""
    times = np.arange(start // step_ms * step_ms, end, step_ms)
    for s in sens:
        mean = np.clip(10 + np.cumsum(rng.normal(0, 0.3, len(times))), 0, 100).round(3)
        spread = rng.uniform(0.1, 2.0, len(times)).round(3)
        head = s.head()
        for t, m, d in zip(times.tolist(), mean.tolist(), spread.tolist(), strict=True):
            yield f"{head} count={per}i,last={m},max={m + d},mean={m},min={m - d} {t}"


def _raw_lines(sens: list[Sensor], start: int, end: int, rng) -> Iterator[str]:
    times = np.arange(start // 10_000 * 10_000, end, 10_000)
    for s in sens:
        values = np.clip(10 + np.cumsum(rng.normal(0, 0.05, len(times))), 0, 100).round(3)
        head = s.head()
        yield from (f"{head} value={v} {t}" for t, v in zip(times.tolist(), values.tolist(), strict=True))


def _event_lines(sens: list[Sensor], start: int, end: int, rng) -> Iterator[str]:
    for s in sens:
        for day in range((end - start) // DAY):
            for k in range(2):
                t0 = start + day * DAY + int(rng.integers(0, DAY - 3_600_000))
                hid = f"HZ-{s.id}-{day}-{k}"
                tags = f"hazard,enterprise_id={s.enterprise},kind=high,region={s.region},sector=hazchem"
                tags += f",sensor_id={s.id},severity=yellow,site_id={s.site}"
                f = f'hazard_id="{hid}",level=1i,threshold=20.0,start={t0}i,rule_id="hazchem.gas"'
                yield f"{tags.replace('hazard,', 'hazard,event=open,', 1)} {f},value=21.0,peak=21.0 {t0}"
                t1 = t0 + int(rng.integers(60_000, 3_600_000))
                yield f"{tags.replace('hazard,', 'hazard,event=clear,', 1)} {f},peak=25.0,end={t1}i {t1}"
    for site in sorted({(s.site, s.enterprise, s.region) for s in sens}):
        for day in range((end - start) // DAY):
            t0 = start + day * DAY + 43_200_000
            tags = f"incident,enterprise_id={site[1]},region={site[2]},sector=hazchem,site_id={site[0]}"
            f = f'incident_id="INC-{site[0]}-{day}",hazards=2i,open_hazards=0i,rule_id="hazchem.site"'
            yield f"{tags},severity=yellow,status=open {f} {t0}"
            yield f"{tags},severity=yellow,status=closed {f} {t0 + 1_800_000}"


def _write(settings: Settings, rp: str, lines: Iterator[str], label: str, chunk: int = 20_000) -> int:
    """Post lines in chunks, two at once; returns the points written."""
    client = httpx.Client(base_url=settings.influx, timeout=120.0)
    params = {"db": settings.influx_db, "rp": rp, "precision": "ms"}
    total, started = 0, time.perf_counter()

    def post(body: str) -> None:
        r = client.post("/write", params=params, content=body.encode())
        if r.status_code != 204:
            raise RuntimeError(f"write to {rp} failed: HTTP {r.status_code} {r.text[:300]}")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pending: list[concurrent.futures.Future] = []
        buf: list[str] = []
        for line in lines:
            buf.append(line)
            if len(buf) == chunk:
                pending.append(pool.submit(post, "\n".join(buf)))
                total += len(buf)
                buf = []
                if len(pending) > 4:
                    pending.pop(0).result()
        if buf:
            pending.append(pool.submit(post, "\n".join(buf)))
            total += len(buf)
        for f in pending:
            f.result()
    client.close()
    took = time.perf_counter() - started
    console.print(f"  {label}: {total:,} points into {rp} in {took:.0f} s ({total / took:,.0f}/s)")
    return total


def _timed(settings: Settings, q: str, repeats: int) -> tuple[float, float, int]:
    """p50 and p99 latency (ms) of a query, and the rows it returned."""
    client = httpx.Client(base_url=settings.influx, timeout=120.0)
    lat, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        r = client.get("/query", params={"db": settings.influx_db, "q": q, "epoch": "ms"})
        lat.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        series = r.json()["results"][0].get("series", [])
        n = sum(len(s["values"]) for s in series)
    client.close()
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), n


def _scanned(settings: Settings, rp: str, w: str) -> int:
    field = "value" if rp == RAW else "count"
    db = settings.influx_db
    body = run(settings, f'SELECT count("{field}") FROM "{db}"."{rp}".reading WHERE {w}')
    series = body["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def run_history_bench(
    settings: Settings,
    *,
    n_sensors: int = 1000,
    days: int = 30,
    minute_days: int = 7,
    repeats: int = 20,
    reuse_end: int | None = None,
) -> list[dict]:
    """Generate, then time the two inspector queries raw vs downsampled; print and return the figures.

    With `reuse_end` (the end hour of an earlier run, printed by it) the data is queried again, not generated."""
    s = settings.model_copy(update={"influx_db": settings.influx_db + "_bench"})
    rng = np.random.default_rng(9)
    sens = sensors(n_sensors)
    end = reuse_end or now_ms() // 3_600_000 * 3_600_000
    start = end - days * DAY + 3_600_000  # inside the raw policy's 30 days
    week = end - 7 * DAY
    ent = sens[0].enterprise
    region = sens[PER_ENTERPRISE * PER_REGION].region  # the second region
    ent_s = [x for x in sens if x.enterprise == ent]
    reg_s = [x for x in sens if x.region == region]
    console.print(f"[bold]history bench[/]: {n_sensors} sensors, {days} days, database {s.influx_db}, end {end}")
    generated: dict[str, int] = {}
    if reuse_end is None:
        generated = _generate(s, sens, ent_s, reg_s, start, end, week, minute_days, rng)
        # Let InfluxDB snapshot its cache and compact the fresh shards before anything is timed.
        time.sleep(30)
    return _measure(s, settings, ent, region, ent_s, reg_s, start, end, week, days, repeats, generated)


def _generate(s, sens, ent_s, reg_s, start, end, week, minute_days, rng) -> dict[str, int]:
    run(s, f'DROP DATABASE "{s.influx_db}"')
    ensure_retention(s)
    return {
        "rollup_1h all sensors": _write(s, ROLLUP_1H, _rollup_lines(sens, start, end, 3_600_000, 360, rng), "1 h"),
        "rollup_1m all sensors, last week": _write(
            s, ROLLUP_1M, _rollup_lines(sens, end - minute_days * DAY, end, 60_000, 6, rng), "1 min, every sensor"
        ),
        "rollup_1m enterprise, earlier": _write(
            s, ROLLUP_1M, _rollup_lines(ent_s, start, end - minute_days * DAY, 60_000, 6, rng), "1 min, enterprise"
        ),
        "raw enterprise, whole range": _write(s, RAW, _raw_lines(ent_s, start, end, rng), "raw, enterprise"),
        "raw region, last week": _write(s, RAW, _raw_lines(reg_s, week, end, rng), "raw, region"),
        "hazard+incident events": _write(s, s.influx_events_rp or RAW, _event_lines(sens, start, end, rng), "events"),
    }


def _measure(s, settings, ent, region, ent_s, reg_s, start, end, week, days, repeats, generated) -> list[dict]:
    cases = [
        (f"one enterprise ({ent}, {len(ent_s)} sensors), {days} days", Filters(start, end, enterprise_id=ent)),
        (f"one region ({region[:4]}, {len(reg_s)} sensors), 7 days", Filters(week, end, region=region[:4])),
    ]
    out = []
    for label, f in cases:
        w = where(f, fields=False)
        interval = max(60, (f.end_ms - f.start_ms) // 1000 // settings.history_points)
        chosen = choose(settings, f.start_ms, f.end_ms, end, settings.history_points).rp
        for rp in (RAW, ROLLUP_1M, ROLLUP_1H):
            step = -(-interval // 3600) * 3600 if rp == ROLLUP_1H else -(-interval // 60) * 60
            q = reading_select(s, Resolution(rp, step), w)
            # Raw scans of millions of points take seconds each: fewer runs (its p99 is then near its max).
            p50, p99, n = _timed(s, q, max(3, repeats // 4) if rp == RAW else repeats)
            out.append(
                {
                    "query": label,
                    "rp": rp + (" (chosen)" if rp == chosen else ""),
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "rows_returned": n,
                    "points_scanned": _scanned(s, rp, w),
                }
            )
        limit = settings.history_max_rows + 1
        hz = f"SELECT * FROM {events_source(s, 'hazard')} WHERE {where(f)} ORDER BY time ASC LIMIT {limit}"
        p50, p99, n = _timed(s, hz, repeats)
        out.append(
            {
                "query": label,
                "rp": "hazard events",
                "p50_ms": p50,
                "p99_ms": p99,
                "rows_returned": n,
                "points_scanned": n,
            }
        )
    table = Table(title=f"history queries, {repeats} runs each (InfluxDB on this machine)")
    for c in ("query", "rp", "p50 ms", "p99 ms", "rows returned", "points scanned"):
        table.add_column(c)
    for r in out:
        table.add_row(
            str(r["query"]),
            str(r["rp"]),
            f"{r['p50_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['rows_returned']:,}",
            f"{r['points_scanned']:,}",
        )
    console.print(table)
    if generated:
        console.print("generated: " + "; ".join(f"{k} {v:,}" for k, v in generated.items()))
    return out
