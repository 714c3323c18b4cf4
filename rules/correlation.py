"""Link hazards on one site into incidents.

First correlation rule: hazards from two or more distinct sensors of one site opening within
the window make one incident; a level-2 hazard (high-high, low-low, gas L2) opens an
incident alone. While an incident is open every new hazard on its site joins it. The
incident's severity follows its worst hazard; it closes when all its hazards have cleared.
State is per site and plain data, so it checkpoints as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .models import SEVERITY_RANK, HazardEvent, IncidentEvent, TimelineEntry, stable_id

RULE_PAIR = "correlation.site_window"
RULE_SEVERE = "correlation.severe_alone"


@dataclass
class Recent:
    hazard_id: str
    sensor_id: str
    start: int
    severity: str
    kind: str
    cleared: bool = False


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


@dataclass
class SiteCorrelation:
    """Correlation state of one site."""

    recent: list[Recent] = field(default_factory=list)
    incident: OpenIncident | None = None

    def to_dict(self) -> dict:
        """Plain data for the checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SiteCorrelation":
        """Inverse of to_dict."""
        inc = d.get("incident")
        return cls(recent=[Recent(**r) for r in d.get("recent", [])],
                   incident=OpenIncident(**inc) if inc else None)


@dataclass(frozen=True)
class SiteInfo:
    """What an incident says about where it happened."""

    site_id: str
    site_name: str
    enterprise_id: str
    enterprise_name: str
    region: str
    sector: str


def _worst(a: str, b: str) -> str:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


def _event(inc: OpenIncident, info: SiteInfo, status: str, ts: int) -> IncidentEvent:
    kinds = ", ".join(e["what"] for e in inc.timeline[:1])
    return IncidentEvent(
        incident_id=inc.incident_id, status=status, severity=inc.severity, rule_id=inc.rule_id,
        title=f"{info.site_name}: {kinds}", site_id=info.site_id, site_name=info.site_name,
        enterprise_id=info.enterprise_id, enterprise_name=info.enterprise_name, region=info.region,
        sector=info.sector, opened_at=inc.opened_at, updated_at=ts,
        closed_at=ts if status == "closed" else None, hazard_ids=list(inc.hazard_ids),
        open_hazard_ids=list(inc.open_hazard_ids),
        timeline=[TimelineEntry(**e) for e in inc.timeline])


def _describe(h: HazardEvent) -> str:
    return f"{h.kind} {h.quantity} {h.sensor_id} {h.value:g} {h.unit} (set point {h.threshold:g})"


def correlate(state: SiteCorrelation, hazard: HazardEvent, info: SiteInfo, window_ms: int) -> list[IncidentEvent]:
    """Feed one hazard event of a site; returns the incident events it causes."""
    inc = state.incident
    ts = hazard.ts
    if hazard.event == "clear":
        state.recent = [r for r in state.recent if ts - r.start <= window_ms]
        for r in state.recent:
            if r.hazard_id == hazard.hazard_id:
                r.cleared = True
        if inc is None or hazard.hazard_id not in inc.open_hazard_ids:
            return []
        inc.open_hazard_ids.remove(hazard.hazard_id)
        inc.timeline.append({"ts": ts, "what": f"cleared {hazard.kind} {hazard.sensor_id} (peak {hazard.peak:g})",
                             "hazard_id": hazard.hazard_id})
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
        inc.severity = _worst(inc.severity, hazard.severity)
        inc.timeline.append({"ts": ts, "what": f"linked {_describe(hazard)}", "hazard_id": hazard.hazard_id})
        inc.updated_at = ts
        return [_event(inc, info, "update", ts)]

    if hazard.event != "open":
        return []
    state.recent = [r for r in state.recent if ts - r.start <= window_ms and r.hazard_id != hazard.hazard_id]
    state.recent.append(Recent(hazard.hazard_id, hazard.sensor_id, hazard.start, hazard.severity, hazard.kind))
    sensors = {r.sensor_id for r in state.recent}
    if hazard.level >= 2:
        rule = RULE_SEVERE
    elif len(sensors) >= 2:
        rule = RULE_PAIR
    else:
        return []
    linked = state.recent
    severity = linked[0].severity
    for r in linked[1:]:
        severity = _worst(severity, r.severity)
    inc = OpenIncident(
        incident_id=stable_id("INC", info.site_id, ts, hazard.hazard_id), rule_id=rule, opened_at=ts,
        updated_at=ts, severity=severity, hazard_ids=[r.hazard_id for r in linked],
        open_hazard_ids=[r.hazard_id for r in linked if not r.cleared],
        timeline=[{"ts": r.start, "what": f"{r.kind} {r.sensor_id}", "hazard_id": r.hazard_id} for r in linked])
    inc.timeline[-1]["what"] = _describe(hazard)
    state.recent = []
    state.incident = inc
    return [_event(inc, info, "open", ts)]
