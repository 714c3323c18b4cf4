"""The rule engine: a batch of readings in, hazard and incident events out.

One object holds all rule state in memory (numpy columns per sensor, small dicts for what
is open). The same engine runs in the Faust worker, in `safewatch replay` and in unit tests.
State is saved and restored per site (`snapshot_site` / `restore_site`), which is how the
worker checkpoints it without a table write per reading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from sensors.registry import Registry

from .batch import Batch, BatchBuilder
from .correlation import SiteCorrelation, SiteInfo, correlate
from .models import HazardEvent, IncidentEvent, stable_id
from .threshold import HIGH_KINDS, LOW_KINDS, build_setpoints, levels, needs_walk, next_level

# The mapping from sensor alarm level to the four colours is not fixed by any standard
# (domain.md §8: n/f); until the rule catalogue sets it per rule, level 1 is yellow and
# level 2 orange, leaving red for correlated or interlock incidents.
LEVEL_SEVERITY = {1: "yellow", 2: "orange"}
NEVER = -(2**62)  # "no reading yet"; far from int64 min so `NEVER - lateness` cannot wrap


@dataclass
class OpenHazard:
    hazard_id: str
    sensor: int
    kind: str
    level: int
    threshold: float
    start: int
    peak: float


@dataclass
class BatchResult:
    """What one batch produced, and what it refused."""

    hazards: list[HazardEvent] = field(default_factory=list)
    incidents: list[IncidentEvent] = field(default_factory=list)
    events: list[HazardEvent | IncidentEvent] = field(default_factory=list)  # both, in causal order
    late: np.ndarray | None = None  # positions older than the allowed lateness: dead-letter them
    skipped: dict[str, int] = field(default_factory=dict)  # counted, not evaluated
    sites: list[str] = field(default_factory=list)  # sites whose state may have changed


class RuleEngine:
    """Threshold rules and site correlation over batches of readings."""

    def __init__(self, registry: Registry, *, correlation_window_s: float = 300.0, lateness_s: float = 60.0):
        self.registry = registry
        self.window_ms = int(correlation_window_s * 1000)
        self.lateness_ms = int(lateness_s * 1000)
        sensors = list(registry.sensors.values())
        self.sensor_ids = [s.id for s in sensors]
        self.index = {sid: i for i, sid in enumerate(self.sensor_ids)}
        self.sensors = sensors
        site_ids = list(registry.sites)
        self.site_ids = site_ids
        site_row = {sid: i for i, sid in enumerate(site_ids)}
        self.sensor_site_names = [s.site_id for s in sensors]
        self.sensor_site = np.array([site_row[s.site_id] for s in sensors], dtype=np.int64)
        self.setpoints = build_setpoints(
            [(s.alarms.high, s.alarms.high_high, s.alarms.low, s.alarms.low_low) for s in sensors],
            [s.deadband_value for s in sensors])
        n = len(sensors)
        self.high_state = np.zeros(n, dtype=np.int8)
        self.low_state = np.zeros(n, dtype=np.int8)
        self.last_ts = np.full(n, NEVER, dtype=np.int64)
        self.open: dict[tuple[int, str], OpenHazard] = {}
        self.correlation: dict[str, SiteCorrelation] = {}
        self.site_info = {sid: self._site_info(sid) for sid in site_ids}
        self.site_rows: dict[str, list[int]] = {}
        for i, s in enumerate(sensors):
            self.site_rows.setdefault(s.site_id, []).append(i)

    def _site_info(self, site_id: str) -> SiteInfo:
        site = self.registry.sites[site_id]
        ent = self.registry.enterprises[site.enterprise_id]
        return SiteInfo(site_id=site_id, site_name=site.name, enterprise_id=ent.id,
                        enterprise_name=ent.name, region=site.region, sector=site.sector)

    def new_batch(self) -> BatchBuilder:
        """An empty batch builder bound to this engine's sensors."""
        return BatchBuilder(self.index, self.sensor_site_names)

    # --- evaluation --------------------------------------------------------------------------
    def process(self, batch: Batch) -> BatchResult:
        """Evaluate a batch in arrival order; returns hazard and incident events."""
        result = BatchResult()
        if len(batch) == 0:
            result.late = np.empty(0, dtype=np.int64)
            return result
        idx, ts, value = batch.idx, batch.ts, batch.value
        before = self.last_ts[idx]
        late = ts < before - self.lateness_ms
        # At or before the sensor's newest reading: a redelivery after a restart or an
        # out-of-order point. It is stored but cannot move rule state backwards in time.
        stale = (ts <= before) & ~late
        evaluate = batch.good & ~late & ~stale
        result.late = np.flatnonzero(late)
        result.skipped = {"out_of_order": int(stale.sum()), "bad_quality": int((~batch.good & ~late).sum())}

        pos = np.flatnonzero(evaluate)
        if len(pos):
            e_idx = idx[pos]
            cols = levels(self.setpoints, e_idx, value[pos])
            walk = np.flatnonzero(needs_walk(cols, e_idx, self.high_state, self.low_state))
            newest: dict[int, int] = {}
            reordered = 0
            for w in walk.tolist():
                i = int(e_idx[w])
                t = int(ts[pos[w]])
                if t <= newest.get(i, NEVER):
                    reordered += 1
                    continue
                newest[i] = t
                v = float(value[pos[w]])
                self._track(i, t, v, HIGH_KINDS, self.high_state, int(cols.high_open[w]), int(cols.high_hold[w]),
                            result, max)
                self._track(i, t, v, LOW_KINDS, self.low_state, int(cols.low_open[w]), int(cols.low_hold[w]),
                            result, min)
            result.skipped["out_of_order"] += reordered

        accepted = ~late
        np.maximum.at(self.last_ts, idx[accepted], ts[accepted])
        result.sites = [self.site_ids[s] for s in np.unique(self.sensor_site[idx]).tolist()]
        for h in result.hazards:
            result.events.append(h)
            caused = self._correlate(h)
            result.incidents.extend(caused)
            result.events.extend(caused)
        return result

    def _track(self, i: int, t: int, v: float, kinds: tuple[str, str], state: np.ndarray,
               open_level: int, hold_level: int, result: BatchResult, worse) -> None:
        s = int(state[i])
        n = next_level(s, open_level, hold_level)
        for level in range(1, max(s, n) + 1):
            key = (i, kinds[level - 1])
            hz = self.open.get(key)
            if level <= n:
                if hz is not None:
                    hz.peak = worse(hz.peak, v)
                elif self._threshold(i, level, kinds) is not None:
                    hz = self._open(i, t, v, kinds[level - 1], level, kinds)
                    result.hazards.append(self._event(hz, "open", t, v))
            elif hz is not None:
                del self.open[key]
                result.hazards.append(self._event(hz, "clear", t, v))
        state[i] = n

    def _threshold(self, i: int, level: int, kinds: tuple[str, str]) -> float | None:
        alarms = self.sensors[i].alarms
        return getattr(alarms, kinds[level - 1])

    def _open(self, i: int, t: int, v: float, kind: str, level: int, kinds) -> OpenHazard:
        sid = self.sensor_ids[i]
        hz = OpenHazard(hazard_id=stable_id("HZ", sid, kind, t), sensor=i, kind=kind, level=level,
                        threshold=float(self._threshold(i, level, kinds)), start=t, peak=v)
        self.open[(i, kind)] = hz
        return hz

    def _event(self, hz: OpenHazard, event: str, t: int, v: float) -> HazardEvent:
        s = self.sensors[hz.sensor]
        info = self.site_info[s.site_id]
        return HazardEvent(
            hazard_id=hz.hazard_id, event=event, kind=hz.kind, level=hz.level,
            severity=LEVEL_SEVERITY[hz.level], rule_id=f"threshold.{hz.kind}", site_id=s.site_id,
            sensor_id=s.id, enterprise_id=info.enterprise_id, region=info.region, sector=info.sector,
            area=s.area, quantity=s.quantity, unit=s.unit, threshold=hz.threshold, value=v, peak=hz.peak,
            start=hz.start, end=t if event == "clear" else None, ts=t)

    def _correlate(self, h: HazardEvent) -> list[IncidentEvent]:
        state = self.correlation.setdefault(h.site_id, SiteCorrelation())
        return correlate(state, h, self.site_info[h.site_id], self.window_ms)

    # --- checkpoints -------------------------------------------------------------------------
    def snapshot_site(self, site_id: str) -> dict:
        """All rule state of one site as plain data (JSON-ready)."""
        rows = self.site_rows.get(site_id, [])
        corr = self.correlation.get(site_id)
        return {
            "v": 1,
            "last_ts": {self.sensor_ids[i]: int(self.last_ts[i]) for i in rows if self.last_ts[i] != NEVER},
            "open": [{**asdict(hz), "sensor": self.sensor_ids[hz.sensor]}
                     for i in rows for kind in HIGH_KINDS + LOW_KINDS if (hz := self.open.get((i, kind)))],
            "correlation": corr.to_dict() if corr else None,
        }

    def restore_site(self, site_id: str, snap: dict) -> None:
        """Replace one site's rule state with a snapshot; unknown sensors are ignored."""
        for i in self.site_rows.get(site_id, []):
            self.high_state[i] = self.low_state[i] = 0
            self.last_ts[i] = NEVER
            for kind in HIGH_KINDS + LOW_KINDS:
                self.open.pop((i, kind), None)
        for sid, t in snap.get("last_ts", {}).items():
            if sid in self.index:
                self.last_ts[self.index[sid]] = t
        for d in snap.get("open", []):
            i = self.index.get(d["sensor"])
            if i is None:
                continue
            hz = OpenHazard(**{**d, "sensor": i})
            self.open[(i, hz.kind)] = hz
            state = self.high_state if hz.kind in HIGH_KINDS else self.low_state
            state[i] = max(int(state[i]), hz.level)
        corr = snap.get("correlation")
        if corr:
            self.correlation[site_id] = SiteCorrelation.from_dict(corr)
        else:
            self.correlation.pop(site_id, None)
