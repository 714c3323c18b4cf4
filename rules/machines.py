"""Per-sensor rule state machines, stepped one reading at a time (only for readings that matter).

Each step calls `emit(kind, event, ts=, value=, colour=, rule_id=, threshold=, level=, peak=)` for
every hazard that opens or clears. Times are event-time milliseconds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .bindings import BoundRate, BoundThreshold


@dataclass
class LevelState:
    active: bool = False
    peak: float = math.nan
    pending_on: int | None = None  # since when the value is past the set point (on-delay)
    pending_off: int | None = None  # since when it is back inside (off-delay)


@dataclass
class RateState:
    samples: deque = field(default_factory=deque)  # (t_ms, value)
    base: int = 0
    sums: list = field(default_factory=lambda: [0.0] * 5)  # n, Σt, Σv, Σt², Σtv with t in s from base
    active: bool = False
    peak: float = 0.0
    pending_off: int | None = None


@dataclass
class SensorState:
    """Everything a sensor's rules remember between readings."""

    levels: dict[str, LevelState] = field(default_factory=dict)
    rate: RateState | None = None
    stuck_count: int = 0
    stuck_active: bool = False
    fault_active: bool = False
    fault_since: int | None = None  # first of an unbroken run of readings beyond the failure limits
    offline_active: bool = False

    def busy(self) -> bool:
        """True when the next reading must be walked even if it looks normal."""
        return (
            self.stuck_count > 0
            or self.stuck_active
            or self.fault_active
            or self.fault_since is not None
            or self.offline_active
            or any(lv.active or lv.pending_on is not None for lv in self.levels.values())
        )

    def idle(self) -> bool:
        """True when this state is what a new one starts from (nothing pending, active or sampled)."""
        return self.rate is None and not self.busy()

    def to_dict(self) -> dict:
        """Plain data for the checkpoint."""
        d = {
            "levels": {
                k: [lv.active, lv.peak, lv.pending_on, lv.pending_off]
                for k, lv in self.levels.items()
                if lv.active or lv.pending_on is not None
            },
            "stuck": [self.stuck_count, self.stuck_active],
            "fault": self.fault_active,
            "offline": self.offline_active,
        }
        if self.fault_since is not None:
            d["fault_since"] = self.fault_since
        if self.rate is not None:
            r = self.rate
            d["rate"] = {"samples": list(r.samples), "active": r.active, "peak": r.peak, "pending_off": r.pending_off}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SensorState:
        """Inverse of to_dict (rate sums are recomputed from the samples)."""
        st = cls(
            levels={
                k: LevelState(a, math.nan if p is None else p, on, off)
                for k, (a, p, on, off) in d.get("levels", {}).items()
            },
            stuck_count=d.get("stuck", [0, False])[0],
            stuck_active=d.get("stuck", [0, False])[1],
            fault_active=d.get("fault", False),
            fault_since=d.get("fault_since"),
            offline_active=d.get("offline", False),
        )
        if "rate" in d:
            r = d["rate"]
            st.rate = RateState(active=r["active"], peak=r["peak"], pending_off=r["pending_off"])
            _rebase(st.rate, [tuple(x) for x in r["samples"]])
        return st


def step_threshold(st: SensorState, b: BoundThreshold, t: int, v: float, emit) -> None:
    """Each level is its own small machine: on-delay before opening, hysteresis and off-delay before clearing."""
    for lv in b.levels:
        s = st.levels.get(lv.kind)
        if s is None:
            s = st.levels[lv.kind] = LevelState()
        past_open = v >= lv.open if lv.up else v <= lv.open
        past_clear = v > lv.clear if lv.up else v < lv.clear
        if s.active:
            if past_clear:
                s.pending_off = None
                s.peak = max(s.peak, v) if lv.up else min(s.peak, v)
            else:
                if s.pending_off is None:
                    s.pending_off = t
                if t - s.pending_off >= b.off_delay_ms:
                    s.active, s.pending_off = False, None
                    emit(
                        lv.kind,
                        "clear",
                        ts=t,
                        value=v,
                        threshold=lv.open,
                        level=lv.level,
                        colour=lv.colour,
                        rule_id=b.rule_id,
                        peak=s.peak,
                    )
        elif past_open:
            if s.pending_on is None:
                s.pending_on = t
            if t - s.pending_on >= b.on_delay_ms:
                s.active, s.pending_on, s.peak = True, None, v
                emit(
                    lv.kind,
                    "open",
                    ts=t,
                    value=v,
                    threshold=lv.open,
                    level=lv.level,
                    colour=lv.colour,
                    rule_id=b.rule_id,
                    peak=v,
                )
        else:
            s.pending_on = None


def _rebase(r: RateState, samples: list[tuple[int, float]]) -> None:
    """Recompute the running sums with the first sample as time origin (keeps them well conditioned)."""
    r.samples = deque(samples)
    r.base = samples[0][0] if samples else 0
    r.sums = [0.0] * 5
    for t, v in samples:
        _add(r, t, v, 1.0)


def _add(r: RateState, t: int, v: float, sign: float) -> None:
    x = (t - r.base) / 1000.0
    s = r.sums
    s[0] += sign
    s[1] += sign * x
    s[2] += sign * v
    s[3] += sign * x * x
    s[4] += sign * x * v


def slope_per_s(r: RateState) -> float | None:
    """Least-squares slope of the window (units per second); robust to uneven sampling."""
    n, st, sv, stt, stv = r.sums
    den = n * stt - st * st
    if n < 2 or den <= 1e-9:
        return None
    return (n * stv - st * sv) / den


def step_rate(st: SensorState, b: BoundRate, t: int, v: float, emit) -> None:
    """Window of the last `window_ms`; the slope, once the window is at least half full, against the limit."""
    r = st.rate
    if r is None:
        r = st.rate = RateState()
    if not r.samples:
        r.base = t
    r.samples.append((t, v))
    _add(r, t, v, 1.0)
    while r.samples and t - r.samples[0][0] > b.window_ms:
        old_t, old_v = r.samples.popleft()
        _add(r, old_t, old_v, -1.0)
    if r.samples and r.samples[0][0] - r.base > 10 * b.window_ms:
        _rebase(r, list(r.samples))
    span = t - r.samples[0][0]
    slope = slope_per_s(r) if len(r.samples) >= b.min_samples and span * 2 >= b.window_ms else None
    rate = None if slope is None else slope * b.per_s  # in the rule's unit: per minute, hour, day
    fast = rate is not None and b.sign * rate >= b.limit
    if r.active:
        if fast:
            r.pending_off = None
            r.peak = max(r.peak, b.sign * rate) if rate is not None else r.peak
        elif rate is not None:
            if r.pending_off is None:
                r.pending_off = t
            if t - r.pending_off >= b.off_delay_ms:
                r.active, r.pending_off = False, None
                emit(
                    b.kind,
                    "clear",
                    ts=t,
                    value=v,
                    threshold=b.limit,
                    level=1,
                    colour=b.colour,
                    rule_id=b.rule_id,
                    peak=b.sign * r.peak,
                )
    elif fast and rate is not None:
        r.active, r.peak = True, b.sign * rate
        emit(b.kind, "open", ts=t, value=v, threshold=b.limit, level=1, colour=b.colour, rule_id=b.rule_id, peak=rate)


def step_stuck(st: SensorState, samples: int, colour: str, rule_id: str, t: int, v: float, same: bool, emit) -> None:
    """`samples` identical consecutive values open `stuck`; the first change clears it."""
    if same:
        st.stuck_count += 1
        if st.stuck_count >= samples - 1 and not st.stuck_active:
            st.stuck_active = True
            emit(
                "stuck",
                "open",
                ts=t,
                value=v,
                threshold=float(samples),
                level=1,
                colour=colour,
                rule_id=rule_id,
                peak=v,
            )
    else:
        st.stuck_count = 0
        if st.stuck_active:
            st.stuck_active = False
            emit(
                "stuck",
                "clear",
                ts=t,
                value=v,
                threshold=float(samples),
                level=1,
                colour=colour,
                rule_id=rule_id,
                peak=v,
            )
