"""Feed health per enterprise: last reading per sensor, silent sensors, counts per reason, gateway clock skew.

Pure code. `Feed` holds what this gateway took in since its last flush to InfluxDB
(ingest/feed_store.py); `report` joins that with what every gateway has flushed (`Seen`), so any
gateway behind the load balancer gives the same answer, and a restart loses at most one flush.
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
class Seen:
    """One enterprise's feed: counts per result (`accepted`, `readings`, or a refusal reason), sensors, examples."""

    last_hour: Counter = field(default_factory=Counter)
    last_day: Counter = field(default_factory=Counter)
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # sensor → (newest event time, received at)
    examples: dict[str, list[dict]] = field(default_factory=dict)  # reason → refusals, newest first
    skew: dict[str, tuple[int, int]] = field(default_factory=dict)  # plant gateway → (received - ts ms, at ms)

    def merge(self, other: Seen) -> None:
        """Add another part of the feed (say, this gateway's unflushed counts) to this one."""
        self.last_hour.update(other.last_hour)
        self.last_day.update(other.last_day)
        for sensor, seen in other.last.items():
            mine = self.last.get(sensor)
            if mine is None or seen[1] > mine[1]:
                self.last[sensor] = seen
        for reason, xs in other.examples.items():
            both = sorted([*xs, *self.examples.get(reason, [])], key=lambda x: -x["at"])
            self.examples[reason] = both[:EXAMPLES_PER_REASON]
        for gw, skew in other.skew.items():
            if gw not in self.skew or skew[1] > self.skew[gw][1]:
                self.skew[gw] = skew


@dataclass
class Pending:
    """What one gateway took in since its last flush: counts per (enterprise, result), sensors, examples, skew."""

    counts: Counter = field(default_factory=Counter)
    sensors: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # sensor → (enterprise, ts, received)
    examples: dict[tuple[str, str], deque] = field(default_factory=dict)  # (enterprise, reason) → refusals
    skew: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (enterprise, gateway) → ..

    def seen(self, enterprise_id: str) -> Seen:
        """This part of the feed as one enterprise's `Seen` (all of it within the last flush interval)."""
        counts = Counter({r: n for (e, r), n in self.counts.items() if e == enterprise_id})
        return Seen(
            last_hour=counts,
            last_day=Counter(counts),
            last={s: (ts, at) for s, (e, ts, at) in self.sensors.items() if e == enterprise_id},
            examples={
                r: sorted(xs, key=lambda x: -x["at"]) for (e, r), xs in self.examples.items() if e == enterprise_id
            },
            skew={g: v for (e, g), v in self.skew.items() if e == enterprise_id},
        )

    def empty(self) -> bool:
        return not (self.counts or self.sensors or self.examples or self.skew)


class Feed:
    """What this gateway took in and has not yet flushed (plus a flush under way)."""

    def __init__(self) -> None:
        self.pending = Pending()
        self.flushing: Pending | None = None

    def record(self, enterprise_id: str, outcomes: list[Outcome], now_ms: int, source: str) -> None:
        """Count one request's (or MQTT batch's) outcomes for an enterprise."""
        p = self.pending
        counts = p.counts
        sensors = p.sensors
        for o in outcomes:
            if o.status == "accepted":
                counts[enterprise_id, "accepted"] += 1
                counts[enterprise_id, "readings"] += len(o.sensors)
                ts = o.ts or 0
                for s in o.sensors:
                    prev = sensors.get(s)
                    if prev is None or ts >= prev[1]:
                        sensors[s] = (enterprise_id, ts, now_ms)
                p.skew[enterprise_id, o.gateway or "-"] = (now_ms - ts, now_ms)
            else:
                reason = o.reason or "?"
                counts[enterprise_id, reason] += 1
                examples = p.examples.setdefault((enterprise_id, reason), deque(maxlen=EXAMPLES_PER_REASON))
                examples.append(
                    {
                        "at": now_ms,
                        "via": source,
                        "field": o.field,
                        "detail": o.detail,
                        "input": o.raw[:EXAMPLE_BYTES].decode(errors="replace"),
                    }
                )

    def take(self) -> Pending:
        """Start a flush: what is pending moves to `flushing` (still counted by `local`) until `done`."""
        self.flushing, self.pending = self.pending, Pending()
        return self.flushing

    def done(self, ok: bool) -> None:
        """End a flush; a failed one goes back to pending, to be written with the next."""
        flushed, self.flushing = self.flushing, None
        if not ok and flushed is not None:
            back, self.pending = self.pending, flushed
            self._absorb(back)

    def local(self, enterprise_id: str) -> Seen:
        """This gateway's not-yet-stored part of an enterprise's feed."""
        seen = self.pending.seen(enterprise_id)
        if self.flushing is not None:
            seen.merge(self.flushing.seen(enterprise_id))
        return seen

    def _absorb(self, newer: Pending) -> None:
        p = self.pending
        p.counts.update(newer.counts)
        p.sensors.update(newer.sensors)
        for key, xs in newer.examples.items():
            p.examples.setdefault(key, deque(maxlen=EXAMPLES_PER_REASON)).extend(xs)
        p.skew.update(newer.skew)


def report(enterprise_id: str, registry: Registry, seen: Seen, now_ms: int, silent_periods: float, state: str) -> dict:
    """The feed page of one enterprise: its sites and sensors, counts, examples, clock skew."""
    sites = []
    silent = []
    for site_id in registry.enterprises[enterprise_id].site_ids:
        sensors = []
        for sensor in registry.sensors_of_site(site_id):
            last = seen.last.get(sensor.id)
            quiet = last is None or now_ms - last[1] > silent_periods * sensor.period_s * 1000
            if quiet:
                silent.append(sensor.id)
            sensors.append(
                {
                    "sensor_id": sensor.id,
                    "period_s": sensor.period_s,
                    "last_ts": last[0] if last else None,
                    "last_received_at": last[1] if last else None,
                    "silent": quiet,
                }
            )
        sites.append({"site_id": site_id, "name": registry.sites[site_id].name, "sensors": sensors})
    return {
        "enterprise_id": enterprise_id,
        "generated_at": now_ms,
        "state": state,
        "sites": sites,
        "silent_sensors": silent,
        "last_hour": {k: v for k, v in seen.last_hour.items() if v},
        "last_day": {k: v for k, v in seen.last_day.items() if v},
        "refused_examples": seen.examples,
        "gateway_clock_skew_ms": {g: {"skew_ms": s, "at": at} for g, (s, at) in seen.skew.items()},
    }
