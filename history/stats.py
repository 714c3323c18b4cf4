"""Per-enterprise figures over a range: alarms per day and per rule, top sensors, time in alarm, MTTA/MTTR."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import mean
from typing import Any
from zoneinfo import ZoneInfo

from .timefmt import days, local_day


def hazard_stats(
    hazards: list[dict[str, Any]], start_ms: int, end_ms: int, tz: ZoneInfo, top: int = 10
) -> dict[str, Any]:
    """Counts of hazards opened in the range and the time spent in alarm (clipped to the range)."""
    per_day = dict.fromkeys(days(start_ms, end_ms, tz), 0)
    per_rule: Counter[str] = Counter()
    per_sensor: dict[str, dict[str, Any]] = defaultdict(lambda: {"hazards": 0, "alarm_s": 0.0})
    alarm_ms = 0
    for h in hazards:
        stop = min(h["end"] if h["end"] is not None else end_ms, end_ms)
        held = max(0, stop - max(h["start"], start_ms))
        alarm_ms += held
        key = h["sensor_id"] or f"{h['site_id']} (site)"
        per_sensor[key]["alarm_s"] += held / 1000
        if start_ms <= h["start"] < end_ms:
            per_day[local_day(h["start"], tz)] = per_day.get(local_day(h["start"], tz), 0) + 1
            per_rule[h["rule_id"]] += 1
            per_sensor[key]["hazards"] += 1
            per_sensor[key].setdefault("quantity", h.get("sensor_quantity"))
    ranked = sorted(per_sensor.items(), key=lambda kv: (-kv[1]["hazards"], -kv[1]["alarm_s"], kv[0]))
    return {
        "hazards_opened": sum(per_rule.values()),
        "alarms_per_day": per_day,
        "alarms_per_rule": dict(per_rule.most_common()),
        "top_sensors": [{"sensor": k, **v} for k, v in ranked[:top]],
        "time_in_alarm_s": alarm_ms / 1000,
    }


def response_times(incidents: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean time to acknowledge (tasks: created → acknowledged) and to resolve (incidents: opened → closed), s."""
    acks = [(t["acknowledged_at"] - t["created_at"]) / 1000 for t in tasks if t.get("acknowledged_at")]
    closes = [(i["closed_at"] - i["opened_at"]) / 1000 for i in incidents if i.get("closed_at")]
    return {
        "mtta_s": round(mean(acks), 1) if acks else None,
        "acknowledged_tasks": len(acks),
        "tasks": len(tasks),
        "mttr_s": round(mean(closes), 1) if closes else None,
        "closed_incidents": len(closes),
        "incidents": len(incidents),
    }
