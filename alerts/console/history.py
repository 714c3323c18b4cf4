"""An incident's hazards and the readings around each, from InfluxDB (InfluxQL over the v1 HTTP API).

The alert service does not import the stream worker, so this is its own small reader of the
points the worker writes: measurement `hazard` (one point per hazard event) and `reading`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from config.settings import Settings

BEFORE_MS = 10 * 60_000  # readings shown before a hazard opened
AFTER_MS = 5 * 60_000  # and after it cleared (or after now)
MAX_POINTS = 400
MAX_HAZARDS = 8
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]+$")  # ids go into InfluxQL string literals


def influx_query(settings: Settings, q: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Rows (column → value, tags included) of the first statement's series; times in epoch ms."""
    params: dict[str, str] = {"db": settings.influx_db, "q": q, "epoch": "ms"}
    headers: dict[str, str] = {}
    if settings.influx_token:
        headers["Authorization"] = f"Token {settings.influx_token}"
    elif settings.influx_user:
        params.update(u=settings.influx_user, p=settings.influx_password or "")
    response = httpx.get(f"{settings.influx}/query", params=params, headers=headers, timeout=timeout)
    response.raise_for_status()
    results = response.json().get("results", [])
    if results and "error" in results[0]:
        raise RuntimeError(f"InfluxQL error: {results[0]['error']}")
    out = []
    for series in results[0].get("series", []) if results else []:
        for values in series.get("values", []):
            out.append({**series.get("tags", {}), **dict(zip(series["columns"], values, strict=False))})
    return out


def hazards(settings: Settings, incident: dict[str, Any], now: int) -> list[dict[str, Any]]:
    """Each hazard of the incident: its newest event (kind, rule, value, peak, set point, start, end)."""
    ids = [h for h in incident.get("hazard_ids", [])[:MAX_HAZARDS] if _SAFE.match(h)]
    site = incident.get("site_id", "")
    scoped = incident.get("scope", "site") != "site"  # an enterprise or region incident: hazards of many sites
    if not ids or not (scoped or _SAFE.match(site)):
        return []
    since = incident["opened_at"] - 24 * 3_600_000  # a hazard may open long before its incident (co-active)
    wanted = " OR ".join(f"hazard_id = '{h}'" for h in ids)
    where_site = "" if scoped else f"site_id = '{site}' AND "
    rows = influx_query(
        settings, f"SELECT * FROM hazard WHERE {where_site}({wanted}) AND time >= {since}ms AND time <= {now}ms"
    )
    newest: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["time"]):
        newest[row["hazard_id"]] = row
    return [newest[h] for h in ids if h in newest]


def readings(settings: Settings, sensor_id: str, start: int, end: int) -> list[list[float]]:
    """[time ms, value] of one sensor between two times, at most MAX_POINTS (evenly thinned)."""
    if not _SAFE.match(sensor_id):
        return []
    rows = influx_query(
        settings, f"SELECT value FROM reading WHERE sensor_id = '{sensor_id}' AND time >= {start}ms AND time <= {end}ms"
    )
    points = [[r["time"], r["value"]] for r in rows if r.get("value") is not None]
    step = max(1, len(points) // MAX_POINTS)
    return points[::step]


def hazard_charts(settings: Settings, incident: dict[str, Any], now: int) -> list[dict[str, Any]]:
    """The incident's hazards, each with the readings of its sensor around it."""
    out = []
    for hazard in hazards(settings, incident, now):
        start = int(hazard.get("start") or hazard["time"])
        end = int(hazard.get("end") or now)
        sensor = hazard.get("sensor_id") or ""
        out.append(
            {
                "hazard_id": hazard["hazard_id"],
                "sensor_id": sensor,
                "kind": hazard.get("kind"),
                "event": hazard.get("event"),
                "severity": hazard.get("severity"),
                "rule_id": hazard.get("rule_id"),
                "value": hazard.get("value"),
                "peak": hazard.get("peak"),
                "threshold": hazard.get("threshold"),
                "start": start,
                "end": hazard.get("end"),
                "readings": readings(settings, sensor, start - BEFORE_MS, min(end + AFTER_MS, now)) if sensor else [],
            }
        )
    return out
