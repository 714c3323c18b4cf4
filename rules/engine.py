"""The rule engine: a batch of readings in, hazard and incident events out.

Per batch, numpy looks at every reading once (previous value and time of its sensor and
site, fault, near a set point, gap) and picks the few that can change anything; only those
are walked through the per-sensor rule machines (rules/machines.py). `advance(now)` moves the
clock without readings: offline sensors and sites, interlock deadlines, flapping settling and
maintenance ends. The same engine runs in the worker, in `safewatch replay` and in unit tests;
its state is saved and restored per site.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from sensors.registry import Registry

from .batch import Batch, BatchBuilder
from .bindings import Bindings, bind
from .catalog import Catalog
from .correlation import SiteCorrelation, SiteInfo, SiteRules, correlate, site_rules
from .correlation import due as absences_due
from .machines import SensorState, step_rate, step_stuck, step_threshold
from .models import HazardEvent, IncidentEvent, NoticeEvent
from .notices import SiteNotice, observe, tick
from .patterns import CorrelationRule, load_correlation_rules
from .publish import MaintenanceWindow, Published, Publisher, Transition

NEVER = -(2**62)  # "no reading yet"; far from int64 min so `NEVER - lateness` cannot wrap
_SPAN = 1 << 41  # event-time span one batch may cover (~70 years), for the grouped running max


@dataclass
class Expectation:
    """An interlock waiting on its response: a trigger hazard opened at a site and these sensors
    must reach `op value` by `deadline` (event time), or `interlock_failed` opens."""

    rule: str
    trigger: tuple[str, str]  # (sensor id, hazard kind) that armed it
    responses: list[int]  # sensor rows that may act; the first one is reported
    op: str
    value: float
    colour: str
    deadline: int
    failed: bool = False

    def satisfied_by(self, v: float) -> bool:
        """Does a response reading `v` meet the expectation?"""
        return satisfies(self.op, self.value, v)

    def to_dict(self) -> dict:
        """Plain data for a checkpoint."""
        return {**asdict(self), "trigger": list(self.trigger)}

    @classmethod
    def from_dict(cls, d: dict) -> Expectation:
        """Back from a checkpoint."""
        return cls(**{**d, "trigger": tuple(d["trigger"])})


def satisfies(op: str, target: float, v: float) -> bool:
    """`v op target` for the interlock operators of the catalogue."""
    return v >= target if op == ">=" else v <= target if op == "<=" else v == target


@dataclass
class BatchResult:
    """What one batch (or one `advance`) produced, and what it refused."""

    hazards: list[HazardEvent] = field(default_factory=list)
    incidents: list[IncidentEvent] = field(default_factory=list)
    notices: list[NoticeEvent] = field(default_factory=list)  # maintenance notices (instrument health)
    events: list[HazardEvent | IncidentEvent | NoticeEvent] = field(default_factory=list)  # all, in causal order
    late: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # positions to dead-letter
    skipped: dict[str, int] = field(default_factory=dict)  # counted, not evaluated
    sites: set[str] = field(default_factory=set)  # sites whose state changed


def _previous(keys: np.ndarray, ts: np.ndarray, newest: np.ndarray):
    """For each reading: newest earlier time of its key (sensor or site) and position order by key."""
    order = np.argsort(keys, kind="stable")
    k, t = keys[order], ts[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    group = np.cumsum(first) - 1
    t0 = int(t.min())
    running = np.maximum.accumulate(group * _SPAN + (t - t0)) - group * _SPAN + t0
    prev = np.empty(len(k), dtype=np.int64)
    prev[1:] = running[:-1]
    prev[first] = NEVER
    prev = np.maximum(prev, newest[k])
    out = np.empty_like(prev)
    out[order] = prev
    return out, order, first


class RuleEngine:
    """All rule kinds of the catalogue (or registry thresholds only) over batches of readings."""

    def __init__(
        self,
        registry: Registry,
        catalog: Catalog | None = None,
        *,
        correlation_window_s: float = 300.0,
        lateness_s: float = 60.0,
        maintenance: list[MaintenanceWindow] | None = None,
        correlation_rules: list[CorrelationRule] | None = None,
        incident_quiet_s: float = 300.0,
    ):
        self.registry = registry
        self.window_ms = int(correlation_window_s * 1000)
        self.quiet_ms = int(incident_quiet_s * 1000)
        self.lateness_ms = int(lateness_s * 1000)
        self.sensors = list(registry.sensors.values())
        self.sensor_ids = [s.id for s in self.sensors]
        self.index = {sid: i for i, sid in enumerate(self.sensor_ids)}
        self.site_ids = list(registry.sites)
        self.site_row = {sid: i for i, sid in enumerate(self.site_ids)}
        self.sensor_site_names = [s.site_id for s in self.sensors]
        self.sensor_site = np.array([self.site_row[s.site_id] for s in self.sensors], dtype=np.int64)
        self.site_info = {sid: self._site_info(sid) for sid in self.site_ids}
        self.site_rows: dict[str, list[int]] = {}
        for i, s in enumerate(self.sensors):
            self.site_rows.setdefault(s.site_id, []).append(i)
        n = len(self.sensors)
        self.last_ts = np.full(n, NEVER, dtype=np.int64)
        self.last_val = np.full(n, np.nan)
        self.site_last_ts = np.full(len(self.site_ids), NEVER, dtype=np.int64)
        self.hot = np.zeros(n, dtype=bool)  # sensor has state that the next reading must see
        self.offline_flag = np.zeros(n, dtype=bool)
        self.state: dict[int, SensorState] = {}
        self.site_offline: dict[str, list[list]] = {}  # site → offline intervals [start, end|None]
        self.expectations: dict[str, list[Expectation]] = {}  # site → pending interlock expectations
        self.correlation: dict[str, SiteCorrelation] = {}
        self.set_correlation_rules(load_correlation_rules() if correlation_rules is None else correlation_rules)
        self.notices: dict[str, SiteNotice] = {}
        # Event time per site before which its offline timers may not fire: the start-up grace
        # a worker gives a restored site (`hold_offline`). Not checkpointed: it belongs to one run.
        self.offline_after = np.full(len(self.site_ids), NEVER, dtype=np.int64)
        self.catalog = catalog
        flapping = {sector: f.flapping for sector, f in (catalog.sectors.items() if catalog else [])}
        self.aggregation = {sector: f.aggregation for sector, f in (catalog.sectors.items() if catalog else [])}
        self.publisher = Publisher(
            flapping, {sid: s.sector for sid, s in registry.sites.items()}, list(maintenance or [])
        )
        self.bindings: Bindings = bind(registry, catalog)
        self._site_gap_cache: tuple[Bindings, np.ndarray] | None = None

    def _site_info(self, site_id: str) -> SiteInfo:
        site = self.registry.sites[site_id]
        ent = self.registry.enterprises[site.enterprise_id]
        return SiteInfo(
            site_id=site_id,
            site_name=site.name,
            enterprise_id=ent.id,
            enterprise_name=ent.name,
            region=site.region,
            sector=site.sector,
        )

    def new_batch(self) -> BatchBuilder:
        """An empty batch builder bound to this engine's sensors."""
        return BatchBuilder(self.index, self.sensor_site_names)

    def set_rules(self, catalog: Catalog | None) -> None:
        """Swap the catalogue atomically; state of rules whose identity is unchanged is kept."""
        old = self.bindings
        new = bind(self.registry, catalog)
        for i, st in list(self.state.items()):
            if _rule_id(old.threshold[i]) is None or _rule_id(old.threshold[i]) != _rule_id(new.threshold[i]):
                st.levels.clear()
            if _rule_id(old.rate[i]) is None or _rule_id(old.rate[i]) != _rule_id(new.rate[i]):
                st.rate = None
            if _rule_id(old.stuck[i]) is None or _rule_id(old.stuck[i]) != _rule_id(new.stuck[i]):
                st.stuck_count, st.stuck_active = 0, False
            self.hot[i] = st.busy()
        self.catalog = catalog
        self.bindings = new
        self.publisher.flapping = {s: f.flapping for s, f in (catalog.sectors.items() if catalog else [])}
        self.aggregation = {s: f.aggregation for s, f in (catalog.sectors.items() if catalog else [])}

    def set_correlation_rules(self, rules: list[CorrelationRule]) -> None:
        """Use these correlation rules from the next hazard on; the hot path takes the site and area ones."""
        self.correlation_rules = list(rules)
        sectors = {s.sector for s in self.registry.sites.values()}
        self.site_rules: dict[str, SiteRules] = {
            sec: site_rules(rules, sec, self.window_ms, self.quiet_ms) for sec in sectors
        }

    def set_maintenance(self, windows: list[MaintenanceWindow]) -> None:
        """Replace the maintenance/calibration windows."""
        self.publisher.windows = list(windows)

    # --- evaluation --------------------------------------------------------------------------
    def process(self, batch: Batch) -> BatchResult:
        """Evaluate a batch in arrival order."""
        result = BatchResult()
        if len(batch) == 0:
            return result
        b = self.bindings
        idx, ts, value, good = batch.idx, batch.ts, batch.value, batch.good
        newest, order, first = _previous(idx, ts, self.last_ts)
        site = self.sensor_site[idx]
        site_newest, _, _ = _previous(site, ts, self.site_last_ts)
        late = ts < newest - self.lateness_ms
        stale = (ts <= newest) & ~late
        fresh = ~late & ~stale
        # Not a measurement: bad quality, or beyond the NE 43 failure limits (a fault only once held).
        fault = fresh & (~good | (value < b.range_lo[idx]) | (value > b.range_hi[idx]))
        in_band = good & (value >= b.band_lo[idx]) & (value <= b.band_hi[idx])
        ok = fresh & ~fault
        prev_val = self._previous_values(idx, value, order, first)
        same = ok & (value == prev_val) & b.stuck_mask[idx]
        seen = newest > NEVER
        gap = fresh & seen & (ts - newest > b.offline_gap_ms[idx])
        site_gap = fresh & (site_newest > NEVER) & (ts - site_newest > self._site_gap[site])
        # A site marked offline by the timer comes back with its first reading, gap or not
        # (a clock that ran ahead of a lagging partition must not leave it open).
        if self._offline_sites:
            marked = np.zeros(len(self.site_ids), dtype=bool)
            marked[[self.site_row[s] for s in self._offline_sites]] = True
            candidates = np.flatnonzero(fresh & marked[site])
            _, first = np.unique(site[candidates], return_index=True)
            site_gap[candidates[first]] = True
        near = (value[:, None] > b.up_clear[idx]).any(axis=1) | (value[:, None] < b.down_clear[idx]).any(axis=1)
        # A sensor with anything to look at in this batch has all its readings walked, in order,
        # so a later reading can clear what an earlier one opened.
        busy = self.hot | b.rate_mask
        busy[idx[fault | gap | site_gap | same | (ok & near)]] = True
        # Where an interlock waits, or may arm in this batch, its response signals are walked too,
        # in order with the trigger: the outcome must not depend on where batches are cut.
        interlock_sites = np.zeros(len(self.site_ids), dtype=bool)
        interlock_sites[self.sensor_site[busy & b.trigger_mask]] = True
        interlock_sites[[self.site_row[s] for s, exps in self.expectations.items() if exps]] = True
        busy |= b.response_mask & interlock_sites[self.sensor_site]
        walk = fresh & busy[idx]
        result.late = np.flatnonzero(late)
        result.skipped = {"out_of_order": int(stale.sum()), "bad_quality": int((~good & fresh).sum())}

        out: list[Published] = []
        for p in np.flatnonzero(walk).tolist():
            out += self._walk(
                int(idx[p]),
                int(ts[p]),
                float(value[p]),
                bool(fault[p]),
                bool(good[p]),
                bool(in_band[p]),
                bool(same[p]),
                bool(gap[p]),
                bool(site_gap[p]),
                int(newest[p]),
                int(site_newest[p]),
            )

        np.maximum.at(self.last_ts, idx[fresh], ts[fresh])
        np.maximum.at(self.site_last_ts, site[fresh], ts[fresh])
        self.last_val[idx[ok]] = value[ok]  # repeated sensors: numpy keeps the last assignment
        result.sites.update(self.site_ids[s] for s in np.unique(site).tolist())
        self._finish(out, result)
        return result

    @property
    def _offline_sites(self) -> list[str]:
        """Sites with an open `site_offline`."""
        return [s for s, iv in self.site_offline.items() if iv and iv[-1][1] is None]

    @property
    def _site_gap(self) -> np.ndarray:
        cached = self._site_gap_cache
        if cached is None or cached[0] is not self.bindings:
            arr = np.array([self.bindings.site_gap_ms.get(s, np.inf) for s in self.site_ids])
            cached = self._site_gap_cache = (self.bindings, arr)
        return cached[1]

    def _previous_values(self, idx, value, order, first) -> np.ndarray:
        v = value[order]
        prev = np.empty_like(v)
        prev[1:] = v[:-1]
        prev[first] = self.last_val[idx[order][first]]
        out = np.empty_like(prev)
        out[order] = prev
        return out

    def _walk(
        self,
        i: int,
        t: int,
        v: float,
        fault: bool,
        good: bool,
        in_band: bool,
        same: bool,
        gap: bool,
        site_gap: bool,
        newest: int,
        site_newest: int,
    ) -> list[Published]:
        b = self.bindings
        site_id = self.sensor_site_names[i]
        sid = self.sensor_ids[i]
        out: list[Published] = []
        st = self.state.get(i)
        if st is None:
            st = self.state[i] = SensorState()

        def emit(kind: str, event: str, **what) -> None:
            self._emit(out, site_id, sid, i, kind, event, **what)

        if site_gap:
            self._site_back(site_id, t, site_newest, out)
        if self.expectations.get(site_id):
            self._expire(site_id, t, out)
        off, flt = b.offline[i], b.fault[i]
        if st.offline_active:
            st.offline_active = False
            self.offline_flag[i] = False
            emit("offline", "clear", ts=t, value=v, colour=off.colour if off else "blue", rule_id=off.id if off else "")
        elif gap and off is not None:
            start, ongoing = self._sensor_deadline(site_id, newest, b.offline_gap_ms[i])
            if not ongoing and start < t:
                emit("offline", "open", ts=start, value=v, colour=off.colour, rule_id=off.id)
                emit("offline", "clear", ts=t, value=v, colour=off.colour, rule_id=off.id)
        if flt is not None:
            fault = self._step_fault(st, flt, i, t, v, fault, good, in_band, emit)
        self._check_responses(i, t, v, fault, out)

        if not fault:
            thr, rate, stuck = b.threshold[i], b.rate[i], b.stuck[i]
            if thr is not None:
                step_threshold(st, thr, t, v, emit)
            if rate is not None:
                step_rate(st, rate, t, v, emit)
            if stuck is not None:
                step_stuck(st, stuck.samples, stuck.colour, stuck.id, t, v, same, emit)
        if b.response_mask[i] and not fault:
            # An interlock armed later in this batch must see this value (the columns update after the walk).
            self.last_ts[i], self.last_val[i] = max(t, int(self.last_ts[i])), v
        self.hot[i] = st.busy()
        return out

    def _step_fault(self, st, flt, i: int, t: int, v: float, beyond: bool, good: bool, in_band: bool, emit) -> bool:
        """NE 43 fault state of one reading; returns whether the reading is not a measurement."""
        b = self.bindings
        if st.fault_active:
            if in_band:  # hysteresis: the transition zone keeps an open fault open
                st.fault_active, st.fault_since = False, None
                emit("sensor_fault", "clear", ts=t, value=v, colour=flt.colour, rule_id=flt.id, peak=v)
                return False
            return True
        if not beyond:
            st.fault_since = None
            return False
        if good and st.fault_since is None:
            st.fault_since = t
        if not good or t - st.fault_since >= flt.on_delay_s * 1000:
            st.fault_active = True
            limit = float(b.range_lo[i] if v < b.range_lo[i] else b.range_hi[i])
            emit("sensor_fault", "open", ts=t, value=v, threshold=limit, colour=flt.colour, rule_id=flt.id, peak=v)
        return True

    # --- offline -----------------------------------------------------------------------------
    def _sensor_deadline(self, site_id: str, last: int, gap_ms: float) -> tuple[int, bool]:
        """When a silent sensor counts as offline: k periods after its last reading, unless its whole
        site was offline then (one site hazard, not N); after the site returns, k periods after that."""
        deadline = last + gap_ms
        for start, end in self.site_offline.get(site_id, []):
            if start <= deadline and (end is None or deadline <= end):
                if end is None:
                    return int(deadline), True
                deadline = end + gap_ms
        return int(deadline), False

    def _emit(
        self,
        out: list[Published],
        site_id: str,
        subject: str,
        sensor: int | None,
        kind: str,
        event: str,
        *,
        ts: int,
        value: float,
        colour: str,
        rule_id: str,
        threshold: float = 0.0,
        level: int = 1,
        peak: float = 0.0,
    ) -> None:
        """Hand a rule transition to the publisher; a sensor hazard may arm or disarm interlocks.
        Instrument hazards (offline, fault) leave threshold, level and peak at their defaults."""
        tr = Transition(
            site_id=site_id,
            subject=subject,
            sensor=sensor,
            kind=kind,
            event=event,
            ts=ts,
            value=value,
            threshold=threshold,
            level=level,
            colour=colour,
            rule_id=rule_id,
            peak=peak,
        )
        out.extend(self.publisher.transition(tr))
        if sensor is not None and kind != "interlock_failed":
            self._arm_interlocks(tr, out)

    def _site_back(self, site_id: str, t: int, site_newest: int, out: list[Published]) -> None:
        off = self.bindings.site_offline[site_id]  # a site gap is only seen where a site rule exists
        intervals = self.site_offline.setdefault(site_id, [])
        if intervals and intervals[-1][1] is None:
            intervals[-1][1] = t
        else:
            start = int(site_newest + self.bindings.site_gap_ms[site_id])
            intervals.append([start, t])
            self._emit(
                out,
                site_id,
                site_id,
                None,
                "site_offline",
                "open",
                ts=start,
                value=math.nan,
                colour=off.site_colour,
                rule_id=off.id,
            )
        self._emit(
            out,
            site_id,
            site_id,
            None,
            "site_offline",
            "clear",
            ts=t,
            value=math.nan,
            colour=off.site_colour,
            rule_id=off.id,
        )
        del intervals[:-8]  # only recent outages can still cover a sensor's deadline

    def advance(self, now: int, site_clock: np.ndarray | None = None) -> BatchResult:
        """Move the clock to `now` (event time) with no readings: timers fire.

        `site_clock` (event time per site row) lets each site run on its own clock: the worker
        derives it from when each site's newest reading arrived, so a partition that is behind
        does not make another partition's sites look silent.
        """
        result = BatchResult()
        out: list[Published] = []
        b = self.bindings
        clock = site_clock if site_clock is not None else np.full(len(self.site_ids), now, dtype=np.int64)
        # A site in its start-up grace has no offline timers yet; what its silence was is decided
        # on event time when it reports again or the grace ends, so the events do not change.
        graced = clock < self.offline_after
        for site_id, gap_ms in b.site_gap_ms.items():
            r = self.site_row[site_id]
            last = int(self.site_last_ts[r])
            intervals = self.site_offline.setdefault(site_id, [])
            if graced[r]:
                continue
            if last > NEVER and last + gap_ms <= clock[r] and not (intervals and intervals[-1][1] is None):
                off = b.site_offline[site_id]
                start = int(last + gap_ms)
                intervals.append([start, None])
                self._emit(
                    out,
                    site_id,
                    site_id,
                    None,
                    "site_offline",
                    "open",
                    ts=start,
                    value=math.nan,
                    colour=off.site_colour,
                    rule_id=off.id,
                )
                result.sites.add(site_id)
        sensor_clock = clock[self.sensor_site]
        due = np.flatnonzero(
            (self.last_ts > NEVER)
            & (self.last_ts + b.offline_gap_ms <= sensor_clock)
            & ~self.offline_flag
            & ~graced[self.sensor_site]
        )
        for i in due.tolist():
            site_id = self.sensor_site_names[i]
            start, ongoing = self._sensor_deadline(site_id, int(self.last_ts[i]), b.offline_gap_ms[i])
            if ongoing or start > sensor_clock[i]:
                continue
            sensor_rule = b.offline[i]
            if sensor_rule is None:  # due only where an offline rule set a finite gap
                continue
            st = self.state.setdefault(i, SensorState())
            st.offline_active = True
            self.offline_flag[i] = True
            self.hot[i] = True
            self._emit(
                out,
                site_id,
                self.sensor_ids[i],
                i,
                "offline",
                "open",
                ts=start,
                value=float(self.last_val[i]),
                colour=sensor_rule.colour,
                rule_id=sensor_rule.id,
            )
            result.sites.add(site_id)
        for site_id, exps in list(self.expectations.items()):
            for e in list(exps):
                if not e.failed and e.deadline <= clock[self.site_row[site_id]]:
                    self._fail(e, out)
                    result.sites.add(site_id)
        out += self.publisher.advance(lambda site_id: int(clock[self.site_row[site_id]]))
        self._finish(out, result)
        for site_id, corr in self.correlation.items():
            waiting = corr.pending or (corr.incident is not None and corr.incident.quiet_until is not None)
            if waiting:  # absences and quiet periods run on the site's clock, whether or not it sends
                info = self.site_info[site_id]
                caused = absences_due(
                    corr,
                    info,
                    int(clock[self.site_row[site_id]]),
                    self.site_rules[info.sector],
                    self.aggregation.get(info.sector),
                )
                if caused:
                    result.incidents.extend(caused)
                    result.events.extend(caused)
                    result.sites.add(site_id)
        for site_id, state in self.notices.items():
            if state.pending:
                held = tick(state, int(clock[self.site_row[site_id]]), self.site_info[site_id])
                result.notices.extend(held)
                result.events.extend(held)
                if held:
                    result.sites.add(site_id)
        return result

    def hold_offline(self, site_id: str, until: int) -> None:
        """Start-up grace: no offline timer of this site fires before its clock reaches `until`."""
        self.offline_after[self.site_row[site_id]] = until

    # --- interlocks --------------------------------------------------------------------------
    def _arm_interlocks(self, tr: Transition, out: list[Published]) -> None:
        """A trigger hazard opened: expect the response; a trigger cleared: drop its expectations."""
        i = tr.sensor
        exps = self.expectations.setdefault(tr.site_id, [])
        if tr.event == "clear":
            for e in [e for e in exps if e.trigger == (tr.subject, tr.kind)]:
                if not e.failed and tr.ts > e.deadline:
                    self._fail(e, out)  # the deadline passed inside this batch, before any timer ran
                exps.remove(e)
                if e.failed:
                    self._resolve(e, tr.ts, out)
            return
        if i is None:
            return
        for bound in self.bindings.interlocks[i]:
            rule = bound.rule
            if tr.kind not in rule.trigger.kinds:
                continue
            if any(
                satisfies(rule.expect.op, rule.expect.value, float(self.last_val[r]))
                for r in bound.responses
                if self.last_ts[r] > NEVER and self.last_ts[r] <= tr.ts
            ):
                continue  # already in the required state
            exps.append(
                Expectation(
                    rule=rule.id,
                    trigger=(tr.subject, tr.kind),
                    responses=list(bound.responses),
                    op=rule.expect.op,
                    value=rule.expect.value,
                    colour=rule.colour,
                    deadline=tr.ts + int(rule.expect.within_s * 1000),
                )
            )

    def _check_responses(self, i: int, t: int, v: float, fault: bool, out: list[Published]) -> None:
        exps = self.expectations.get(self.sensor_site_names[i])
        if not exps:
            return
        for e in list(exps):
            if i not in e.responses:
                continue
            # (a deadline before `t` was already failed by `_expire`, earlier in this walk step)
            if not fault and e.satisfied_by(v):
                exps.remove(e)
                if e.failed:
                    self._resolve(e, t, out)

    def _expire(self, site_id: str, t: int, out: list[Published]) -> None:
        """A reading at `t` shows the site's clock passed these deadlines: fail them now, in order,
        as a timer between frames would have, so the result does not depend on batch size."""
        for e in self.expectations[site_id]:
            if not e.failed and e.deadline < t:
                self._fail(e, out)

    def _fail(self, e: Expectation, out: list[Published]) -> None:
        """Nothing acted by the deadline: `interlock_failed`, at the highest level."""
        e.failed = True
        r = e.responses[0]
        if any(
            x.failed and x.responses[0] == r and x is not e
            for x in self.expectations.get(self.sensor_site_names[r], [])
        ):
            return  # the same response is already reported as failed
        self._emit(
            out,
            self.sensor_site_names[r],
            self.sensor_ids[r],
            r,
            "interlock_failed",
            "open",
            ts=e.deadline,
            value=float(self.last_val[r]),
            threshold=e.value,
            level=4,
            colour=e.colour,
            rule_id=e.rule,
            peak=float(self.last_val[r]),
        )

    def _resolve(self, e: Expectation, t: int, out: list[Published]) -> None:
        """The response came late, or the demand went away: the failure clears."""
        r = e.responses[0]
        site_id = self.sensor_site_names[r]
        if any(x.failed and x.responses[0] == r for x in self.expectations.get(site_id, [])):
            return  # another trigger still waits on the same response
        self._emit(
            out,
            site_id,
            self.sensor_ids[r],
            r,
            "interlock_failed",
            "clear",
            ts=t,
            value=float(self.last_val[r]),
            threshold=e.value,
            level=4,
            colour=e.colour,
            rule_id=e.rule,
            peak=float(self.last_val[r]),
        )

    # --- output ------------------------------------------------------------------------------
    def _finish(self, published: list[Published], result: BatchResult) -> None:
        for p in published:
            h = self._event(p)
            result.hazards.append(h)
            result.events.append(h)
            result.sites.add(h.site_id)
            if p.event == "suppressed":
                continue
            caused = self._correlate(h)
            result.incidents.extend(caused)
            result.events.extend(caused)
            noticed = observe(self.notices.setdefault(h.site_id, SiteNotice()), h, self.site_info[h.site_id])
            result.notices.extend(noticed)
            result.events.extend(noticed)

    def _event(self, p: Published) -> HazardEvent:
        tr = p.tr
        info = self.site_info[tr.site_id]
        s = self.sensors[tr.sensor] if tr.sensor is not None else None
        return HazardEvent(
            hazard_id=p.hazard_id or "",
            event=p.event,
            kind=tr.kind,
            level=tr.level,
            severity=tr.colour,
            rule_id=tr.rule_id,
            site_id=tr.site_id,
            sensor_id=s.id if s else "",
            enterprise_id=info.enterprise_id,
            region=info.region,
            sector=info.sector,
            area=s.area if s else "",
            quantity=s.quantity if s else "site",
            unit=s.unit if s else "",
            threshold=tr.threshold,
            value=_finite(tr.value),
            peak=_finite(tr.peak),
            start=p.start,
            end=p.end,
            ts=tr.ts,
            flapping=p.flapping,
            flap_count=p.flap_count,
            note=p.note,
        )

    def _correlate(self, h: HazardEvent) -> list[IncidentEvent]:
        state = self.correlation.setdefault(h.site_id, SiteCorrelation())
        return correlate(
            state,
            h,
            self.site_info[h.site_id],
            self.window_ms,
            self.aggregation.get(h.sector),
            self.site_rules[h.sector],
        )

    # --- checkpoints -------------------------------------------------------------------------
    def snapshot_site(self, site_id: str) -> dict:
        """All rule state of one site as plain data (JSON-ready)."""
        return self.snapshot_sites([site_id])[site_id]

    def snapshot_sites(self, site_ids: list[str]) -> dict[str, dict]:
        """All rule state of these sites as plain data; it shares containers with the live state,
        so serialise it before the next batch."""
        published = self.publisher.snapshot_sites(site_ids)
        return {s: self._snapshot(s, published[s]) for s in site_ids}

    def _snapshot(self, site_id: str, published: dict) -> dict:
        rows = self.site_rows.get(site_id, [])
        corr = self.correlation.get(site_id)
        # Whole columns at once: indexing numpy arrays one sensor at a time made this most of a checkpoint.
        ts, vals = self.last_ts[rows].tolist(), self.last_val[rows].tolist()
        states = [self.state.get(i) for i in rows]
        return {
            "v": 2,
            "last": {self.sensor_ids[i]: [t, _finite(v)] for i, t, v in zip(rows, ts, vals, strict=True) if t != NEVER},
            "site_last": int(self.site_last_ts[self.site_row[site_id]]),
            # an idle state is what a sensor without one starts from: leaving it out restores the same
            "sensors": {
                self.sensor_ids[i]: st.to_dict()
                for i, st in zip(rows, states, strict=True)
                if st is not None and not st.idle()
            },
            "site_offline": self.site_offline.get(site_id, []),
            "expectations": [e.to_dict() for e in self.expectations.get(site_id, [])],
            "publisher": published,
            "correlation": corr.to_dict() if corr else None,
            "notice": self.notices[site_id].to_dict() if site_id in self.notices else None,
        }

    def restore_site(self, site_id: str, snap: dict) -> None:
        """Replace one site's rule state with a snapshot; unknown sensors are ignored."""
        if snap.get("v") != 2:
            return  # an older checkpoint format: start this site fresh rather than misread it
        for i in self.site_rows.get(site_id, []):
            self.last_ts[i], self.last_val[i] = NEVER, np.nan
            self.state.pop(i, None)
            self.hot[i] = self.offline_flag[i] = False
        for sid, (t, v) in snap.get("last", {}).items():
            if sid in self.index:
                i = self.index[sid]
                self.last_ts[i], self.last_val[i] = t, (np.nan if v is None else v)
        self.site_last_ts[self.site_row[site_id]] = snap.get("site_last", NEVER)
        for sid, d in snap.get("sensors", {}).items():
            if sid in self.index:
                i = self.index[sid]
                st = self.state[i] = SensorState.from_dict(d)
                self.hot[i] = st.busy()
                self.offline_flag[i] = st.offline_active
        self.site_offline[site_id] = [list(x) for x in snap.get("site_offline", [])]
        self.expectations[site_id] = [Expectation.from_dict(d) for d in snap.get("expectations", [])]
        self.publisher.restore_site(site_id, snap.get("publisher", {}))
        corr = snap.get("correlation")
        if corr:
            self.correlation[site_id] = SiteCorrelation.from_dict(corr)
        else:
            self.correlation.pop(site_id, None)
        notice = snap.get("notice")
        if notice:
            self.notices[site_id] = SiteNotice.from_dict(notice)
        else:
            self.notices.pop(site_id, None)
        self.offline_after[self.site_row[site_id]] = NEVER


def _rule_id(bound: object) -> str | None:
    """The id of a bound rule (threshold, rate: `rule_id`; catalogue rules: `id`), None for no rule."""
    return None if bound is None else getattr(bound, "rule_id", None) or getattr(bound, "id", None)


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x
