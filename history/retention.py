"""Retention policies and continuous queries: raw points for a while, 1-minute and 1-hour aggregates longer.

`raw` is the database's DEFAULT policy, so every write and query that names no policy (the worker,
the console, hand-written InfluxQL) uses it unchanged. The roll-ups are the measurement `reading` in
the policies `rollup_1m` and `rollup_1h`, fields min, mean, max, last, count, with the raw tags.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from config.settings import Settings

RAW, ROLLUP_1M, ROLLUP_1H = "raw", "rollup_1m", "rollup_1h"
EVENT_MEASUREMENTS = ("hazard", "incident", "incident_state", "notice", "deadletter")
AGGREGATES = ("min", "mean", "max", "last", "count")
# A continuous query recomputes this much of the recent past on every run, so readings that
# arrive late (up to the worker's lateness bound, and a spool drained after an outage) are rolled up.
RESAMPLE_FOR = {ROLLUP_1M: "15m", ROLLUP_1H: "3h"}
INTERVAL = {ROLLUP_1M: "1m", ROLLUP_1H: "1h"}


@dataclass(frozen=True)
class Policy:
    """One retention policy as set up on the database."""

    name: str
    duration: str
    shard: str
    default: bool = False


def ident(name: str) -> str:
    """An InfluxQL identifier, double-quoted."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policies(settings: Settings) -> list[Policy]:
    """The three policies, from the settings."""
    out = [
        Policy(RAW, settings.influx_raw_retention, "1d", default=True),
        Policy(ROLLUP_1M, settings.influx_rollup_1m_retention, "7d"),
        Policy(ROLLUP_1H, settings.influx_rollup_1h_retention, "30d"),
    ]
    if settings.influx_events_rp:
        out.append(Policy(settings.influx_events_rp, settings.influx_events_retention, "30d"))
    return out


def events_source(settings: Settings, measurement: str) -> str:
    """Where history reads an event measurement: the long-kept copy if there is one, else the default policy."""
    if not settings.influx_events_rp:
        return measurement
    return f"{ident(settings.influx_db)}.{ident(settings.influx_events_rp)}.{measurement}"


def rollup_select(settings: Settings, rp: str, start_ms: int | None = None, end_ms: int | None = None) -> str:
    """`SELECT min, mean, max, last, count INTO rp.reading FROM raw.reading GROUP BY time(i), *` (a range: backfill)."""
    db = ident(settings.influx_db)
    fields = ", ".join(f"{fn}(value) AS {fn}" for fn in AGGREGATES)
    where = ""
    if start_ms is not None and end_ms is not None:
        # Whole intervals only: a bucket computed from part of its points would overwrite the full one.
        step = {ROLLUP_1M: 60_000, ROLLUP_1H: 3_600_000}[rp]
        start_ms, end_ms = start_ms // step * step, -(-end_ms // step) * step
        where = f" WHERE time >= {start_ms}ms AND time < {end_ms}ms"
    return (
        f"SELECT {fields} INTO {db}.{ident(rp)}.reading FROM {db}.{ident(RAW)}.reading{where}"
        f" GROUP BY time({INTERVAL[rp]}), *"
    )


def statements(settings: Settings) -> list[str]:
    """Idempotent InfluxQL that creates (or updates) the policies and the continuous queries."""
    db = ident(settings.influx_db)
    out = [f"CREATE DATABASE {db}"]
    for p in policies(settings):
        # CREATE fails on an existing policy with other settings; ALTER then brings it in line.
        tail = f"DURATION {p.duration} REPLICATION 1 SHARD DURATION {p.shard}" + (" DEFAULT" if p.default else "")
        out.append(f"CREATE RETENTION POLICY {ident(p.name)} ON {db} {tail}")
        out.append(f"ALTER RETENTION POLICY {ident(p.name)} ON {db} {tail}")
    for rp in (ROLLUP_1M, ROLLUP_1H):
        name = ident(f"cq_reading_{rp}")
        out.append(f"DROP CONTINUOUS QUERY {name} ON {db}")  # a changed definition replaces the old one
        if settings.influx_rollup_job:
            continue  # `history rollup` writes the same points: a continuous query too would do it twice
        out.append(
            f"CREATE CONTINUOUS QUERY {name} ON {db} RESAMPLE EVERY {INTERVAL[rp]} FOR {RESAMPLE_FOR[rp]}"
            f" BEGIN {rollup_select(settings, rp)} END"
        )
    return out


def run(settings: Settings, q: str, *, timeout: float = 60.0) -> dict:
    """POST one InfluxQL statement; the JSON body (errors left to the caller)."""
    params: dict[str, str] = {"db": settings.influx_db}
    headers: dict[str, str] = {}
    if settings.influx_token:
        headers["Authorization"] = f"Token {settings.influx_token}"
    elif settings.influx_user:
        params.update(u=settings.influx_user, p=settings.influx_password or "")
    resp = httpx.post(f"{settings.influx}/query", params=params, data={"q": q}, headers=headers, timeout=timeout)
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code != 200 or "error" in body:
        raise RuntimeError(f"InfluxQL failed: HTTP {resp.status_code} {resp.text[:300]} (query: {q})")
    return body


def _error(body: dict) -> str | None:
    return next((r["error"] for r in body.get("results", []) if "error" in r), None)


def ensure_retention(settings: Settings) -> list[str]:
    """Create the database, policies and continuous queries; returns the statements that took effect."""
    done = []
    for q in statements(settings):
        err = _error(run(settings, q))
        if err is None:
            done.append(q)
        elif q.startswith("CREATE RETENTION POLICY") and "already exists" in err:
            continue  # the ALTER that follows brings it in line
        elif q.startswith("DROP CONTINUOUS QUERY") and "not found" in err:
            continue
        else:
            raise RuntimeError(f"InfluxQL failed: {err} (query: {q})")
    return done


def backfill(settings: Settings, start_ms: int, end_ms: int) -> dict[str, int]:
    """Roll up [start, end) into both roll-up policies now (continuous queries only cover the recent past)."""
    written = {}
    for rp in (ROLLUP_1M, ROLLUP_1H):
        body = run(settings, rollup_select(settings, rp, start_ms, end_ms), timeout=600.0)
        err = _error(body)
        if err:
            raise RuntimeError(f"roll-up into {rp} failed: {err}")
        series = body["results"][0].get("series", [])
        written[rp] = int(series[0]["values"][0][1]) if series else 0
    return written


def shown_policies(settings: Settings) -> list[dict]:
    """SHOW RETENTION POLICIES as dicts (name, duration, default)."""
    body = run(settings, f"SHOW RETENTION POLICIES ON {ident(settings.influx_db)}")
    series = body["results"][0].get("series", [])
    return [dict(zip(series[0]["columns"], v, strict=False)) for v in series[0]["values"]] if series else []
