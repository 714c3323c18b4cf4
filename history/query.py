"""Hazard and incident histories from InfluxDB: one row per hazard or incident, names beside codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from config.settings import Settings
from rules.models import SEVERITY_RANK
from sensors.registry import Registry
from streams.influx import query, rows

from .filters import FilterError, Filters, quote, where
from .resolution import Resolution, choose, reading_select
from .retention import events_source
from .timefmt import local, now_ms


class NotFound(LookupError):
    """An id that names nothing in the range asked."""


@dataclass
class Page:
    """A page of rows, with the total before paging and whether the scan hit its limit."""

    total: int
    offset: int
    limit: int
    rows: list[dict[str, Any]]
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON shape of the page."""
        return {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "truncated": self.truncated,
            "rows": self.rows,
        }


def page(items: list[dict[str, Any]], limit: int, offset: int, truncated: bool = False) -> Page:
    """Slice a full result."""
    if limit < 1 or offset < 0:
        raise FilterError("limit must be ≥ 1 and offset ≥ 0")
    return Page(len(items), offset, limit, items[offset : offset + limit], truncated)


def names(registry: Registry, row: dict[str, Any]) -> dict[str, Any]:
    """Add enterprise, site, region names and the sensor's quantity/unit beside their codes."""
    ent = registry.enterprises.get(row.get("enterprise_id") or "")
    site = registry.sites.get(row.get("site_id") or "")
    region = registry.regions.get(row.get("region") or "")
    sensor = registry.sensors.get(row.get("sensor_id") or "")
    row["enterprise_name"] = ent.name if ent else None
    row["site_name"] = site.name if site else None
    row["region_name"] = region.name if region else None
    if "sensor_id" in row:
        row["sensor_quantity"] = sensor.quantity if sensor else None
        row["sensor_unit"] = sensor.unit if sensor else None
    return row


def with_local_times(row: dict[str, Any], tz: ZoneInfo, keys: tuple[str, ...]) -> dict[str, Any]:
    """`<key>_local` beside each epoch-ms key, and the zone's name."""
    for k in keys:
        row[f"{k}_local"] = local(row.get(k), tz)
    row["tz"] = tz.key
    return row


def _events(settings: Settings, measurement: str, f: Filters, cap: int) -> tuple[list[dict], bool]:
    q = f"SELECT * FROM {events_source(settings, measurement)} WHERE {where(f)} ORDER BY time ASC LIMIT {cap + 1}"
    got = rows(query(settings, q, timeout=120.0))
    return got[:cap], len(got) > cap


def hazard_rows(settings: Settings, registry: Registry, f: Filters) -> tuple[list[dict[str, Any]], bool]:
    """Every hazard with an event in the range, newest start first: one row per hazard id."""
    events, truncated = _events(settings, "hazard", f, settings.history_max_rows)
    by_id: dict[str, dict[str, Any]] = {}
    for e in events:
        h = by_id.get(e["hazard_id"])
        if h is None:
            h = by_id[e["hazard_id"]] = {
                "hazard_id": e["hazard_id"],
                "kind": e["kind"],
                "rule_id": e["rule_id"],
                "level": e["level"],
                "severity": e["severity"],
                "enterprise_id": e.get("enterprise_id"),
                "site_id": e.get("site_id"),
                "sensor_id": e.get("sensor_id") or "",
                "region": e.get("region"),
                "sector": e.get("sector"),
                "start": e["start"],
                "end": None,
                "threshold": e.get("threshold"),
                "peak": e.get("peak"),
                "events": 0,
            }
        h["events"] += 1
        h["level"] = max(h["level"], e["level"])
        if SEVERITY_RANK[e["severity"]] > SEVERITY_RANK[h["severity"]]:
            h["severity"] = e["severity"]
        if e.get("peak") is not None:
            h["peak"] = e["peak"]
        if e["event"] == "clear":
            h["end"] = e.get("end") or e["time"]
    tz = ZoneInfo(settings.history_tz)
    out = [with_local_times(names(registry, h), tz, ("start", "end")) for h in by_id.values()]
    out.sort(key=lambda h: (-h["start"], h["hazard_id"]))
    return out, truncated


def incident_rows(settings: Settings, registry: Registry, f: Filters) -> tuple[list[dict[str, Any]], bool]:
    """Every incident with a state change in the range, newest first: one row per incident id."""
    if f.level is not None or f.sensor_id:
        raise FilterError("incidents have no level or sensor: filter by severity colour or site")
    events, truncated = _events(settings, "incident", f, settings.history_max_rows)
    by_id: dict[str, dict[str, Any]] = {}
    for e in events:
        i = by_id.get(e["incident_id"])
        if i is None:
            i = by_id[e["incident_id"]] = {
                "incident_id": e["incident_id"],
                "rule_id": e["rule_id"],
                "severity": e["severity"],
                "status": e["status"],
                "enterprise_id": e.get("enterprise_id"),
                "site_id": e.get("site_id"),
                "region": e.get("region"),
                "sector": e.get("sector"),
                "opened_at": e["time"],
                "closed_at": None,
                "hazards": 0,
                "events": 0,
            }
        i["events"] += 1
        i["status"] = e["status"]
        i["hazards"] = max(i["hazards"], e.get("hazards") or 0)
        if SEVERITY_RANK[e["severity"]] > SEVERITY_RANK[i["severity"]]:
            i["severity"] = e["severity"]
        if e["status"] == "open":
            i["opened_at"] = e["time"]
        if e["status"] == "closed":
            i["closed_at"] = e["time"]
    tz = ZoneInfo(settings.history_tz)
    out = [with_local_times(names(registry, i), tz, ("opened_at", "closed_at")) for i in by_id.values()]
    out.sort(key=lambda i: (-i["opened_at"], i["incident_id"]))
    return out, truncated


def readings(
    settings: Settings, registry: Registry, f: Filters, *, now: int | None = None, points: int | None = None
) -> tuple[Resolution, list[dict[str, Any]]]:
    """Readings per sensor at the resolution that fits the range (raw, rollup_1m or rollup_1h)."""
    res = choose(settings, f.start_ms, f.end_ms, now_ms() if now is None else now, points or settings.history_points)
    q = reading_select(settings, res, where(f, fields=False))
    got = rows(query(settings, q, timeout=120.0))
    tz = ZoneInfo(settings.history_tz)
    for r in got:
        r["time_local"] = local(r["time"], tz)
    return res, got


def incident_events(settings: Settings, incident_id: str) -> list[dict[str, Any]]:
    """Every stored state change of one incident, oldest first; NotFound if there is none."""
    source = events_source(settings, "incident")
    got = rows(query(settings, f"SELECT * FROM {source} WHERE incident_id = {quote(incident_id)} ORDER BY time ASC"))
    if not got:
        raise NotFound(f"no incident {incident_id!r} in InfluxDB (kept for {settings.influx_events_retention})")
    return got


def timeline(
    settings: Settings, registry: Registry, incident_id: str, *, around_s: int = 300, now: int | None = None
) -> dict[str, Any]:
    """An incident's state changes, the hazards of its site that led to it, and each hazard's readings around it."""
    tz = ZoneInfo(settings.history_tz)
    events = incident_events(settings, incident_id)
    first, last = events[0], events[-1]
    site_id = first["site_id"]
    opened = first["time"]
    closed = last["time"] if last["status"] == "closed" else None
    lead = int(settings.correlation_window_s * 1000)
    hf = Filters(opened - lead, (closed or (now or now_ms())) + 1, site_id=site_id)
    hazards, _ = hazard_rows(settings, registry, hf)
    hazards = [h for h in hazards if h["start"] <= (closed or hf.end_ms)]
    entries: list[dict[str, Any]] = [
        {"ts": e["time"], "what": f"incident {e['status']} ({e['severity']}, {e.get('hazards', 0)} hazards)"}
        for e in events
    ]
    for h in sorted(hazards, key=lambda h: h["start"]):
        where_ = f"sensor {h['sensor_id']}" if h["sensor_id"] else "site"
        what = f"hazard {h['kind']} L{h['level']} on {where_}"
        entries.append({"ts": h["start"], "what": what, "hazard_id": h["hazard_id"]})
        if h["end"] is not None:
            entries.append({"ts": h["end"], "what": f"hazard {h['kind']} cleared", "hazard_id": h["hazard_id"]})
        if h["sensor_id"]:
            rf = Filters(h["start"] - around_s * 1000, h["start"] + around_s * 1000, sensor_id=h["sensor_id"])
            res, pts = readings(settings, registry, rf, now=now)
            h["readings"] = {"rp": res.rp, "interval_s": res.interval_s, "points": pts}
    entries.sort(key=lambda e: e["ts"])
    for e in entries:
        e["ts_local"] = local(e["ts"], tz)
    head = names(
        registry,
        {
            "incident_id": incident_id,
            "site_id": site_id,
            "enterprise_id": first.get("enterprise_id"),
            "region": first.get("region"),
            "sector": first.get("sector"),
            "rule_id": first["rule_id"],
            "severity": max((e["severity"] for e in events), key=SEVERITY_RANK.__getitem__),
            "status": last["status"],
            "opened_at": opened,
            "closed_at": closed,
        },
    )
    return {"incident": with_local_times(head, tz, ("opened_at", "closed_at")), "entries": entries, "hazards": hazards}
