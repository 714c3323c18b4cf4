"""Feed health per enterprise: last reading per sensor, silent sensors, counts per reason, gateway clock skew.

Kept in this gateway process's memory (the gateway is otherwise stateless): a restarted gateway
starts empty, and with several gateways behind a load balancer each reports what it received.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from sensors.registry import Registry

from .intake import Outcome

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
EXAMPLES_PER_REASON = 5
EXAMPLE_BYTES = 512


@dataclass
class _Enterprise:
    minutes: deque = field(default_factory=deque)  # (minute, Counter) oldest first, a day at most
    examples: dict[str, deque] = field(default_factory=dict)  # reason → recent refusals
    skew: dict[str, tuple[int, int]] = field(default_factory=dict)  # gateway → (received - ts ms, at ms)


class Feed:
    """What this gateway has seen, per enterprise and per sensor."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, int]] = {}  # sensor → (newest event time, when it arrived)
        self._ent: dict[str, _Enterprise] = {}

    def record(self, enterprise_id: str, outcomes: list[Outcome], now_ms: int, source: str) -> None:
        """Count one request's (or MQTT batch's) outcomes for an enterprise."""
        ent = self._ent.setdefault(enterprise_id, _Enterprise())
        counts = self._minute(ent, now_ms)
        last = self.last
        for o in outcomes:
            if o.status == "accepted":
                counts["accepted"] += 1
                counts["readings"] += len(o.sensors)
                ts = o.ts or 0
                for s in o.sensors:
                    prev = last.get(s)
                    if prev is None or ts >= prev[0]:
                        last[s] = (ts, now_ms)
                ent.skew[o.gateway or "-"] = (now_ms - ts, now_ms)
            else:
                reason = o.reason or "?"
                counts[reason] += 1
                examples = ent.examples.setdefault(reason, deque(maxlen=EXAMPLES_PER_REASON))
                examples.append(
                    {
                        "at": now_ms,
                        "via": source,
                        "field": o.field,
                        "detail": o.detail,
                        "input": o.raw[:EXAMPLE_BYTES].decode(errors="replace"),
                    }
                )

    def refusals(self, enterprise_id: str, reason: str, now_ms: int, window_ms: int = DAY_MS) -> int:
        """Refusals (or `accepted`/`readings`) of an enterprise in the last window."""
        return self._totals(enterprise_id, now_ms, window_ms)[reason]

    def report(self, enterprise_id: str, registry: Registry, now_ms: int, silent_periods: float) -> dict:
        """The feed page of one enterprise: its sites and sensors, counts, examples, clock skew."""
        ent = self._ent.get(enterprise_id, _Enterprise())
        sites = []
        silent = []
        for site_id in registry.enterprises[enterprise_id].site_ids:
            sensors = []
            for sensor in registry.sensors_of_site(site_id):
                seen = self.last.get(sensor.id)
                quiet = seen is None or now_ms - seen[1] > silent_periods * sensor.period_s * 1000
                if quiet:
                    silent.append(sensor.id)
                sensors.append(
                    {
                        "sensor_id": sensor.id,
                        "period_s": sensor.period_s,
                        "last_ts": seen[0] if seen else None,
                        "last_received_at": seen[1] if seen else None,
                        "silent": quiet,
                    }
                )
            sites.append({"site_id": site_id, "name": registry.sites[site_id].name, "sensors": sensors})
        return {
            "enterprise_id": enterprise_id,
            "generated_at": now_ms,
            "state": "in this gateway process's memory since it started",
            "sites": sites,
            "silent_sensors": silent,
            "last_hour": dict(self._totals(enterprise_id, now_ms, HOUR_MS)),
            "last_day": dict(self._totals(enterprise_id, now_ms, DAY_MS)),
            "refused_examples": {r: list(x) for r, x in ent.examples.items()},
            "gateway_clock_skew_ms": {g: {"skew_ms": s, "at": at} for g, (s, at) in ent.skew.items()},
        }

    def _minute(self, ent: _Enterprise, now_ms: int) -> Counter:
        minute = now_ms // MINUTE_MS
        if not ent.minutes or ent.minutes[-1][0] != minute:
            ent.minutes.append((minute, Counter()))
            while ent.minutes and ent.minutes[0][0] <= minute - DAY_MS // MINUTE_MS:
                ent.minutes.popleft()
        return ent.minutes[-1][1]

    def _totals(self, enterprise_id: str, now_ms: int, window_ms: int) -> Counter:
        total: Counter = Counter()
        ent = self._ent.get(enterprise_id)
        if ent is None:
            return total
        first = (now_ms - window_ms) // MINUTE_MS
        for minute, counts in ent.minutes:
            if minute > first:
                total.update(counts)
        return total
