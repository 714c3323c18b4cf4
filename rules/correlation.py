"""Link hazards on one site into incidents.

Hazards from two or more distinct sensors of one site opening within the window make one
incident; so do two or more distinct sensors' hazards that are open at the same time, however far
apart they opened (a tailings pond whose rainfall, pond level and dry beach go into alarm over
hours); a hazard of orange or red opens one alone (gas L2, high-high, interlock failed).
While an incident is open every new hazard on its site joins it. The incident's severity is
its worst hazard's, raised by GB 39496 point counting where the sector's catalogue asks for it
(tailings: 4 points of one item at blue → yellow, 3 at yellow → orange, 2 at orange → red).
It closes when all its hazards have cleared. Instrument health (offline sensor or site, stuck,
sensor fault) is a maintenance matter, not an incident: those hazards are not correlated.
State is per site and plain data, so it checkpoints as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .models import SEVERITY_RANK, HazardEvent, IncidentEvent, TimelineEntry, stable_id, worst

RULE_PAIR = "correlation.site_window"
RULE_SEVERE = "correlation.severe_alone"
RULE_COACTIVE = "correlation.site_coactive"
NOT_CORRELATED = frozenset({"offline", "site_offline", "stuck", "sensor_fault"})


@dataclass
class Recent:
    hazard_id: str
    sensor_id: str
    start: int
    severity: str
    kind: str
    cleared: bool = False
    quantity: str = ""


@dataclass
class OpenIncident:
    incident_id: str
    rule_id: str
    opened_at: int
    updated_at: int
    severity: str
    hazard_ids: list[str]
    open_hazard_ids: list[str]
    timeline: list[dict]
    points: dict = field(default_factory=dict)  # open hazard id → [quantity, sensor, severity] for point counting
    # every linked hazard id → [kind, quantity, sensor, severity], kept after it clears: the title
    # describes what is open now, and at the close what the incident was.
    linked: dict = field(default_factory=dict)


@dataclass
class SiteCorrelation:
    """Correlation state of one site."""

    recent: list[Recent] = field(default_factory=list)
    incident: OpenIncident | None = None

    def to_dict(self) -> dict:
        """Plain data for the checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SiteCorrelation:
        """Inverse of to_dict."""
        inc = d.get("incident")
        return cls(recent=[Recent(**r) for r in d.get("recent", [])], incident=OpenIncident(**inc) if inc else None)


@dataclass(frozen=True)
class SiteInfo:
    """What an incident says about where it happened."""

    site_id: str
    site_name: str
    enterprise_id: str
    enterprise_name: str
    region: str
    sector: str


RULE_TEXT = {
    RULE_PAIR: "hazards of several sensors opened within the correlation window",
    RULE_COACTIVE: "hazards of several sensors open at the same time",
    RULE_SEVERE: "an orange or red hazard",
}


def situation(inc: OpenIncident, site_name: str) -> tuple[str, str]:
    """Title and summary of the incident as it stands: its worst open hazard, how many sensors, which rule."""
    ids = inc.open_hazard_ids or inc.hazard_ids  # at the close: what it was
    known = [inc.linked[h] for h in ids if h in inc.linked]
    if not known:  # a checkpoint from before `linked` was kept
        first = inc.timeline[0]["what"] if inc.timeline else inc.rule_id
        return f"{site_name}: {first}", f"{site_name}: {first}"
    # The worst by severity; among equals the first linked, so the title does not flip between equals.
    kind, quantity, sensor, _ = max(known, key=lambda k: SEVERITY_RANK[k[3]])
    sensors = len({k[2] for k in known})
    more = f" and {sensors - 1} more sensor{'s' if sensors > 2 else ''}" if sensors > 1 else ""
    title = f"{site_name}: {kind} {quantity} at {sensor}{more}"
    if not inc.open_hazard_ids:
        title += " — all clear"
    n_open = len(inc.open_hazard_ids)
    now = (
        f"{n_open} hazard{'s' if n_open != 1 else ''} open on {sensors} sensor{'s' if sensors != 1 else ''}, "
        f"{len(inc.hazard_ids)} linked in all"
        if n_open
        else f"all clear, {len(inc.hazard_ids)} hazards on {sensors} sensor{'s' if sensors != 1 else ''} were linked"
    )
    rule = f"rule {inc.rule_id} ({RULE_TEXT.get(inc.rule_id, inc.rule_id)})"
    return title, f"{inc.severity}: {now}; worst {kind} {quantity} at {sensor}; {rule}"


def _event(inc: OpenIncident, info: SiteInfo, status: str, ts: int) -> IncidentEvent:
    title, summary = situation(inc, info.site_name)
    return IncidentEvent(
        incident_id=inc.incident_id,
        status=status,
        severity=inc.severity,
        rule_id=inc.rule_id,
        title=title,
        summary=summary,
        site_id=info.site_id,
        site_name=info.site_name,
        enterprise_id=info.enterprise_id,
        enterprise_name=info.enterprise_name,
        region=info.region,
        sector=info.sector,
        opened_at=inc.opened_at,
        updated_at=ts,
        closed_at=ts if status == "closed" else None,
        hazard_ids=list(inc.hazard_ids),
        open_hazard_ids=list(inc.open_hazard_ids),
        timeline=[TimelineEntry(**e) for e in inc.timeline],
    )


def _describe(h: HazardEvent) -> str:
    value = "" if h.value is None else f" {h.value:g} {h.unit}"
    return f"{h.kind} {h.quantity} {h.sensor_id or h.site_id}{value} (limit {h.threshold:g})"


def counted_severity(points: dict, aggregation) -> str | None:
    """GB 39496 §5.5.4 point counting over one incident's open hazards, per monitored item."""
    if aggregation is None or not points:
        return None
    best = None
    items: dict[str, dict[str, str]] = {}
    for quantity, sensor, severity in points.values():
        items.setdefault(quantity, {})
        prev = items[quantity].get(sensor)
        items[quantity][sensor] = severity if prev is None else worst(prev, severity)
    for sensors in items.values():

        def at_least(c: str, sensors: dict[str, str] = sensors) -> int:
            return sum(1 for s in sensors.values() if SEVERITY_RANK[s] >= SEVERITY_RANK[c])

        level = None
        if at_least("orange") >= aggregation.orange:
            level = "red"
        elif at_least("yellow") >= aggregation.yellow:
            level = "orange"
        elif at_least("blue") >= aggregation.blue:
            level = "yellow"
        if level:
            best = level if best is None else worst(best, level)
    return best


def _rescore(inc: OpenIncident, aggregation) -> None:
    counted = counted_severity(inc.points, aggregation)
    if counted and SEVERITY_RANK[counted] > SEVERITY_RANK[inc.severity]:
        inc.severity = counted
        inc.timeline.append(
            {"ts": inc.updated_at, "what": f"raised to {counted} by point counting (GB 39496)", "hazard_id": None}
        )


def correlate(
    state: SiteCorrelation, hazard: HazardEvent, info: SiteInfo, window_ms: int, aggregation=None
) -> list[IncidentEvent]:
    """Feed one hazard event of a site; returns the incident events it causes."""
    if hazard.kind in NOT_CORRELATED or hazard.event == "suppressed":
        return []
    inc = state.incident
    ts = hazard.ts
    if hazard.event == "update":
        if inc is None or hazard.hazard_id not in inc.hazard_ids:
            return []
        inc.timeline.append(
            {
                "ts": ts,
                "what": f"{hazard.kind} {hazard.sensor_id} flapping ({hazard.flap_count} opens)",
                "hazard_id": hazard.hazard_id,
            }
        )
        inc.updated_at = ts
        return [_event(inc, info, "update", ts)]
    if hazard.event == "clear":
        for r in state.recent:
            if r.hazard_id == hazard.hazard_id:
                r.cleared = True
        state.recent = [r for r in state.recent if _kept(r, ts, window_ms)]
        if inc is None or hazard.hazard_id not in inc.open_hazard_ids:
            return []
        inc.open_hazard_ids.remove(hazard.hazard_id)
        inc.points.pop(hazard.hazard_id, None)
        peak = "" if hazard.peak is None else f" (peak {hazard.peak:g})"
        inc.timeline.append(
            {
                "ts": ts,
                "what": f"cleared {hazard.kind} {hazard.sensor_id or hazard.site_id}{peak}",
                "hazard_id": hazard.hazard_id,
            }
        )
        inc.updated_at = ts
        if inc.open_hazard_ids:
            return [_event(inc, info, "update", ts)]
        state.incident = None
        return [_event(inc, info, "closed", ts)]

    if inc is not None:
        if hazard.hazard_id in inc.hazard_ids:  # re-delivered after a restart: already linked
            return []
        inc.hazard_ids.append(hazard.hazard_id)
        inc.open_hazard_ids.append(hazard.hazard_id)
        inc.points[hazard.hazard_id] = [hazard.quantity, hazard.sensor_id, hazard.severity]
        inc.linked[hazard.hazard_id] = [
            hazard.kind,
            hazard.quantity,
            hazard.sensor_id or hazard.site_id,
            hazard.severity,
        ]
        inc.severity = worst(inc.severity, hazard.severity)
        inc.timeline.append({"ts": ts, "what": f"linked {_describe(hazard)}", "hazard_id": hazard.hazard_id})
        inc.updated_at = ts
        _rescore(inc, aggregation)
        return [_event(inc, info, "update", ts)]

    if hazard.event != "open":
        return []
    state.recent = [r for r in state.recent if _kept(r, ts, window_ms) and r.hazard_id != hazard.hazard_id]
    state.recent.append(
        Recent(
            hazard.hazard_id,
            hazard.sensor_id or hazard.site_id,
            hazard.start,
            hazard.severity,
            hazard.kind,
            quantity=hazard.quantity,
        )
    )
    if SEVERITY_RANK[hazard.severity] >= SEVERITY_RANK["orange"]:
        rule = RULE_SEVERE
    elif len({r.sensor_id for r in state.recent if ts - r.start <= window_ms}) >= 2:
        rule = RULE_PAIR
    elif len({r.sensor_id for r in state.recent if not r.cleared}) >= 2:
        rule = RULE_COACTIVE
    else:
        return []
    linked = state.recent
    severity = linked[0].severity
    for r in linked[1:]:
        severity = worst(severity, r.severity)
    inc = OpenIncident(
        incident_id=stable_id("INC", info.site_id, ts, hazard.hazard_id),
        rule_id=rule,
        opened_at=ts,
        updated_at=ts,
        severity=severity,
        hazard_ids=[r.hazard_id for r in linked],
        open_hazard_ids=[r.hazard_id for r in linked if not r.cleared],
        timeline=[{"ts": r.start, "what": f"{r.kind} {r.sensor_id}", "hazard_id": r.hazard_id} for r in linked],
        points={r.hazard_id: [r.quantity, r.sensor_id, r.severity] for r in linked if not r.cleared},
        linked={r.hazard_id: [r.kind, r.quantity, r.sensor_id, r.severity] for r in linked},
    )
    inc.timeline[-1]["what"] = _describe(hazard)
    _rescore(inc, aggregation)
    state.recent = []
    state.incident = inc
    return [_event(inc, info, "open", ts)]


def _kept(r: Recent, ts: int, window_ms: int) -> bool:
    """A site remembers a hazard while it may still pair: opened within the window, or still open."""
    return not r.cleared or ts - r.start <= window_ms
