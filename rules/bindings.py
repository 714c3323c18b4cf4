"""Bind the catalogue to the registry: which rule, with which numbers, applies to each sensor.

The result is partly columns (numpy, one row per sensor) for the batch pre-pass that decides
which readings need a closer look, and partly small per-sensor records for the walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sensors.registry import Registry, Sensor

from .catalog import Catalog, FaultRule, InterlockRule, OfflineRule, RateRule, StuckRule, ThresholdRule, resolve

# NAMUR NE 43 as fractions of the measuring span (4-20 mA: 3.6 / 21.0 mA and 3.8 / 20.5 mA): a little
# outside the range is a saturated measurement (zero drift, a gas detector pegged at full scale), only
# beyond the failure limits is it instrument failure information.
NE43_FAILURE = (-0.025, 1.0625)
NE43_MEASUREMENT = (-0.0125, 1.03125)
MAX_LEVELS = 4  # per direction
DEFAULT_COLOURS = {"high": "yellow", "high_high": "orange", "low": "yellow", "low_low": "orange"}


@dataclass(frozen=True)
class BoundLevel:
    """One level of one sensor: opens at `open`, stays open while beyond `clear`."""

    kind: str
    up: bool  # True: opens above `open`; False: below
    open: float
    clear: float
    colour: str
    level: int  # 1 = mildest of its direction


@dataclass(frozen=True)
class BoundThreshold:
    rule_id: str
    levels: tuple[BoundLevel, ...]
    on_delay_ms: int
    off_delay_ms: int


@dataclass(frozen=True)
class BoundRate:
    rule_id: str
    kind: str  # rate_rise / rate_fall
    sign: int
    limit: float
    per_s: float
    window_ms: int
    min_samples: int
    off_delay_ms: int
    colour: str


@dataclass(frozen=True)
class BoundInterlock:
    rule: InterlockRule
    responses: tuple[int, ...]  # sensor rows that must act


@dataclass
class Bindings:
    """Everything the engine needs to know about rules, per sensor row."""

    threshold: list[BoundThreshold | None]
    rate: list[BoundRate | None]
    stuck: list[StuckRule | None]
    fault: list[FaultRule | None]
    offline: list[OfflineRule | None]
    interlocks: list[tuple[BoundInterlock, ...]]  # rules this sensor triggers
    up_clear: np.ndarray  # (n, 4): below these nothing above-level is open or opening
    down_clear: np.ndarray  # (n, 4)
    range_lo: np.ndarray  # failure limits (NE 43): beyond them a value is not a measurement
    range_hi: np.ndarray
    band_lo: np.ndarray  # measurement band: an open fault clears only inside it
    band_hi: np.ndarray
    offline_gap_ms: np.ndarray  # k × period, +inf where no offline rule
    rate_mask: np.ndarray
    stuck_mask: np.ndarray
    response_mask: np.ndarray  # sensors some interlock waits on
    trigger_mask: np.ndarray  # sensors whose hazards arm an interlock
    site_gap_ms: dict[str, float] = field(default_factory=dict)
    site_offline: dict[str, OfflineRule] = field(default_factory=dict)


def _levels_from_rule(rule: ThresholdRule, s: Sensor) -> tuple[BoundLevel, ...]:
    out = []
    for lv in rule.levels:
        up = lv.above is not None
        open_ = resolve(lv.above if up else lv.below, s.alarms)
        if open_ is None:
            continue  # the rule refers to a set point this installation does not have
        clear = resolve(lv.clear, s.alarms)
        if clear is None:
            clear = open_ - s.deadband_value if up else open_ + s.deadband_value
        out.append((lv.kind, up, open_, clear, lv.colour))
    return _numbered(out)


def _levels_from_registry(s: Sensor) -> tuple[BoundLevel, ...]:
    out = []
    for kind, up in (("high", True), ("high_high", True), ("low", False), ("low_low", False)):
        sp = getattr(s.alarms, kind)
        if sp is not None:
            clear = sp - s.deadband_value if up else sp + s.deadband_value
            out.append((kind, up, float(sp), clear, DEFAULT_COLOURS[kind]))
    return _numbered(out)


def _numbered(raw: list[tuple]) -> tuple[BoundLevel, ...]:
    """Order each direction from mildest to worst and number the levels 1.."""
    ups = sorted((r for r in raw if r[1]), key=lambda r: r[2])
    downs = sorted((r for r in raw if not r[1]), key=lambda r: -r[2])
    out = []
    for group in (ups, downs):
        for n, (kind, up, open_, clear, colour) in enumerate(group[:MAX_LEVELS], 1):
            out.append(BoundLevel(kind, up, open_, clear, colour, n))
    return tuple(out)


def bind(registry: Registry, catalog: Catalog | None) -> Bindings:
    """Compile rules for every sensor; with no catalogue, registry set points only (issue-2 behaviour)."""
    sensors = list(registry.sensors.values())
    n = len(sensors)
    row = {s.id: i for i, s in enumerate(sensors)}
    up_clear = np.full((n, MAX_LEVELS), np.inf)
    down_clear = np.full((n, MAX_LEVELS), -np.inf)
    range_lo = np.full(n, -np.inf)
    range_hi = np.full(n, np.inf)
    band_lo = np.full(n, -np.inf)
    band_hi = np.full(n, np.inf)
    gap = np.full(n, np.inf)
    b = Bindings(
        threshold=[None] * n,
        rate=[None] * n,
        stuck=[None] * n,
        fault=[None] * n,
        offline=[None] * n,
        interlocks=[()] * n,
        up_clear=up_clear,
        down_clear=down_clear,
        range_lo=range_lo,
        range_hi=range_hi,
        band_lo=band_lo,
        band_hi=band_hi,
        offline_gap_ms=gap,
        rate_mask=np.zeros(n, bool),
        stuck_mask=np.zeros(n, bool),
        response_mask=np.zeros(n, bool),
        trigger_mask=np.zeros(n, bool),
    )
    for i, s in enumerate(sensors):
        site = registry.sites[s.site_id]
        rules = [r for r in (catalog.rules(s.sector) if catalog else []) if r.match.applies(s.quantity, site.kind)]
        thr = next((r for r in rules if isinstance(r, ThresholdRule)), None)
        levels = _levels_from_rule(thr, s) if thr else _levels_from_registry(s)
        if levels:
            rid = thr.id if thr else f"{s.sector}.registry.threshold"
            b.threshold[i] = BoundThreshold(
                rid, levels, int((thr.on_delay_s if thr else 0) * 1000), int((thr.off_delay_s if thr else 0) * 1000)
            )
            ups = [lv.clear for lv in levels if lv.up]
            downs = [lv.clear for lv in levels if not lv.up]
            up_clear[i, : len(ups)] = ups
            down_clear[i, : len(downs)] = downs
        rate = next((r for r in rules if isinstance(r, RateRule)), None)
        if rate:
            sign = 1 if rate.direction == "rise" else -1
            b.rate[i] = BoundRate(
                rate.id,
                f"rate_{rate.direction}",
                sign,
                rate.limit,
                rate.per_s,
                int(rate.window_s * 1000),
                rate.min_samples,
                int(rate.off_delay_s * 1000),
                rate.colour,
            )
            b.rate_mask[i] = True
        b.stuck[i] = stuck = next((r for r in rules if isinstance(r, StuckRule)), None)
        b.fault[i] = fault = next((r for r in rules if isinstance(r, FaultRule)), None)
        b.offline[i] = offline = next((r for r in rules if isinstance(r, OfflineRule)), None)
        if stuck:
            b.stuck_mask[i] = True
        if fault:
            lo, hi = s.range
            span = hi - lo
            range_lo[i], range_hi[i] = lo + NE43_FAILURE[0] * span, lo + NE43_FAILURE[1] * span
            band_lo[i], band_hi[i] = lo + NE43_MEASUREMENT[0] * span, lo + NE43_MEASUREMENT[1] * span
        if offline:
            gap[i] = offline.periods * s.period_s * 1000
    for site_id, site in registry.sites.items():
        rows = [row[sid] for sid in site.sensor_ids]
        off = next((b.offline[r] for r in rows if b.offline[r]), None)
        if off:
            b.site_offline[site_id] = off
            b.site_gap_ms[site_id] = off.periods * min(sensors[r].period_s for r in rows) * 1000
        for r in rows:
            s = sensors[r]
            triggers = []
            for rule in catalog.rules(s.sector) if catalog else []:
                if (
                    isinstance(rule, InterlockRule)
                    and s.quantity in rule.trigger.quantity
                    and rule.match.applies(s.quantity, site.kind)
                ):
                    resp = tuple(
                        row[o]
                        for o in site.sensor_ids
                        if sensors[row[o]].quantity in rule.expect.quantity
                        and (rule.scope == "site" or sensors[row[o]].area == s.area)
                    )
                    if resp:
                        triggers.append(BoundInterlock(rule, resp))
                        b.response_mask[list(resp)] = True
                        b.trigger_mask[r] = True
            b.interlocks[r] = tuple(triggers)
    return b
