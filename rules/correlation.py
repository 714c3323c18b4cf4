"""Link hazards on one site into incidents, by the site and area rules of `rules/correlation/*.yaml`.

The rules (rules/patterns.py) say which hazards belong together and how severe that is: the
built-in ones open an incident for two or more sensors' hazards that opened within the window or
are open at the same time, or for one orange or red hazard alone; sector rules name situations
(rainstorm + pond level + dry beach on a tailings pond, NH3 alarm and the exhaust fan not running).
A site has at most one open incident: while it is open every new hazard of the site joins it, and
a rule that then matches is written in its timeline and may only raise its severity (the rule
that set the current colour is the incident's `rule_id`). Its severity is also raised by GB 39496
point counting where the sector's catalogue asks for it (tailings: 4 points of one item at blue →
yellow, 3 at yellow → orange, 2 at orange → red). When all its hazards have cleared it resolves
(`closed`) after a quiet period with none back; a hazard opening before then joins it again.
Absence rules wait on the site's clock (`due`), so they fire even if the site sends nothing more.
Instrument health (offline sensor or site, stuck, sensor fault) is a maintenance matter, not an
incident: those hazards are not correlated. State is per site and plain data, so it checkpoints as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .models import SEVERITY_RANK, HazardEvent, IncidentEvent, TimelineEntry, stable_id, worst
from .patterns import CorrelationRule, Entry, Pending, answered, arm, fires, rule_severity

RULE_PAIR = "correlation.site_window"
RULE_SEVERE = "correlation.severe_alone"
RULE_COACTIVE = "correlation.site_coactive"
NOT_CORRELATED = frozenset({"offline", "site_offline", "stuck", "sensor_fault"})


@dataclass
class SiteRules:
    """The hot-path rules of one sector, in the order they are tried, and how long a hazard may still count."""

    rules: list[CorrelationRule]
    keep_ms: int  # longest window: a cleared hazard is remembered this long
    quiet_ms: int = 0  # an incident whose hazards all cleared resolves after this long with none back
    by_id: dict[str, CorrelationRule] = field(init=False)
    texts: dict[str, str] = field(init=False)  # rule id → English text, for summaries

    def __post_init__(self) -> None:
        self.by_id = {r.id: r for r in self.rules}
        self.texts = {r.id: r.text.en for r in self.rules}


def site_rules(rules: list[CorrelationRule], sector: str, default_window_ms: int, quiet_ms: int = 0) -> SiteRules:
    """The site and area rules that see `sector`: its own first, then the general ones."""
    mine = [r for r in rules if r.hot and r.applies_to(sector)]
    mine.sort(key=lambda r: r.sectors is None)  # stable: file order within each group
    windows = [r.window_ms(default_window_ms) for r in mine if r.kind != "coactive"]
    return SiteRules(mine, max(windows, default=default_window_ms), quiet_ms)


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
    entries: list[dict] = field(default_factory=list)  # linked hazards as Entry data: later rules test them
    rules: dict[str, str] = field(default_factory=dict)  # every rule that matched → the colour it gave
    quiet_until: int | None = None  # all clear: resolves at this event time unless a hazard opens first


@dataclass
class SiteCorrelation:
    """Correlation state of one site."""

    recent: list[Entry] = field(default_factory=list)  # hazards not in an incident that may still count
    incident: OpenIncident | None = None
    pending: list[Pending] = field(default_factory=list)  # absence rules waiting

    def to_dict(self) -> dict:
        """Plain data for the checkpoint."""
        return {
            "v": 3,
            "recent": [e.to_dict() for e in self.recent],
            # vars, not asdict: a long incident's timeline deep-copied once a second stalled the worker
            "incident": dict(vars(self.incident)) if self.incident else None,
            "pending": [p.to_dict() for p in self.pending],
        }

    @classmethod
    def from_dict(cls, d: dict) -> SiteCorrelation:
        """Inverse of to_dict; state from before rules were data starts afresh (it cannot be read as entries)."""
        if d.get("v") != 3:
            return cls()
        inc = d.get("incident")
        return cls(
            recent=[Entry(**e) for e in d.get("recent", [])],
            incident=OpenIncident(**inc) if inc else None,
            pending=[Pending(**p) for p in d.get("pending", [])],
        )


@dataclass(frozen=True)
class SiteInfo:
    """What an incident says about where it happened."""

    site_id: str
    site_name: str
    enterprise_id: str
    enterprise_name: str
    region: str
    sector: str


def situation(inc: OpenIncident, site_name: str, rule_text: dict[str, str] | None = None) -> tuple[str, str]:
    """Title and summary of the incident as it stands: its worst open hazard, how many sensors, which rule."""
    ids = inc.open_hazard_ids or inc.hazard_ids  # at the close: what it was
    known = [inc.linked[h] for h in ids if h in inc.linked]
    if not known:
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
    rule = f"rule {inc.rule_id} ({(rule_text or {}).get(inc.rule_id, inc.rule_id)})"
    return title, f"{inc.severity}: {now}; worst {kind} {quantity} at {sensor}; {rule}"


def _event(inc: OpenIncident, info: SiteInfo, status: str, ts: int, rules: SiteRules) -> IncidentEvent:
    title, summary = situation(inc, info.site_name, rules.texts)
    return IncidentEvent(
        incident_id=inc.incident_id,
        status=status,
        severity=inc.severity,
        rule_id=inc.rule_id,
        title=title,
        summary=summary,
        **asdict(info),  # where: site, enterprise, region, sector
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


def entry_of(h: HazardEvent) -> Entry:
    """A hazard event as correlation rules see it."""
    return Entry(
        id=h.hazard_id,
        site_id=h.site_id,
        sensor_id=h.sensor_id or h.site_id,
        area=h.area,
        quantity=h.quantity,
        kind=h.kind,
        rule_id=h.rule_id,
        severity=h.severity,
        sector=h.sector,
        enterprise_id=h.enterprise_id,
        region=h.region,
        start=h.start,
    )


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


def _best(matches: list[tuple[CorrelationRule, list[Entry]]]) -> tuple[CorrelationRule, list[Entry], str] | None:
    """The rule that names an incident: the most severe outcome; among equals the first tried."""
    best = None
    for rule, got in matches:
        colour = rule_severity(rule, got)
        if best is None or SEVERITY_RANK[colour] > SEVERITY_RANK[best[2]]:
            best = (rule, got, colour)
    return best


def _matched(rule: CorrelationRule, got: list[Entry], colour: str, ts: int) -> dict:
    which = ", ".join(e.sensor_id for e in got)
    return {"ts": ts, "what": f"rule {rule.id} ({rule.text.en}): {colour}, {which}", "hazard_id": None}


def _apply(inc: OpenIncident, rule: CorrelationRule, got: list[Entry], colour: str, ts: int, rules: SiteRules) -> None:
    """A rule matched on an open incident: record it, and let it raise (never lower) the severity.

    The incident is named by the rule that set its colour; at the same colour a sector's rule,
    which says what is happening, takes the name from a general one.
    """
    inc.rules[rule.id] = colour
    inc.timeline.append(_matched(rule, got, colour, ts))
    current = rules.by_id.get(inc.rule_id)
    names_better = rule.sectors is not None and (current is None or current.sectors is None)
    if SEVERITY_RANK[colour] > SEVERITY_RANK[inc.severity] or (colour == inc.severity and names_better):
        inc.severity = worst(inc.severity, colour)
        inc.rule_id = rule.id


def _link(inc: OpenIncident, h: HazardEvent, e: Entry) -> None:
    inc.hazard_ids.append(h.hazard_id)
    inc.open_hazard_ids.append(h.hazard_id)
    inc.points[h.hazard_id] = [h.quantity, h.sensor_id, h.severity]
    inc.linked[h.hazard_id] = [h.kind, h.quantity, h.sensor_id or h.site_id, h.severity]
    inc.entries.append(e.to_dict())
    inc.severity = worst(inc.severity, h.severity)
    inc.timeline.append({"ts": h.ts, "what": f"linked {_describe(h)}", "hazard_id": h.hazard_id})


def _open(
    state: SiteCorrelation,
    rule: CorrelationRule,
    got: list[Entry],
    colour: str,
    ts: int,
    trigger: str,
    aggregation,
    trigger_text: str | None = None,
) -> OpenIncident:
    """A new incident from every hazard the site still remembers (the rule's own among them).

    `trigger` (the hazard that made the rule fire) goes into the id; `trigger_text` describes it in full.
    """
    linked = list(state.recent)
    for e in got:
        if all(x.id != e.id for x in linked):
            linked.append(e)
    linked.sort(key=lambda e: e.start)
    severity = colour
    for e in linked:
        severity = worst(severity, e.severity)
    inc = OpenIncident(
        incident_id=stable_id("INC", linked[0].site_id, ts, trigger),
        rule_id=rule.id,
        opened_at=ts,
        updated_at=ts,
        severity=severity,
        hazard_ids=[e.id for e in linked],
        open_hazard_ids=[e.id for e in linked if e.cleared_at is None],
        timeline=[
            {
                "ts": e.start,
                "what": trigger_text if e.id == trigger and trigger_text else f"{e.kind} {e.sensor_id}",
                "hazard_id": e.id,
            }
            for e in linked
        ],
        points={e.id: [e.quantity, e.sensor_id, e.severity] for e in linked if e.cleared_at is None},
        linked={e.id: [e.kind, e.quantity, e.sensor_id, e.severity] for e in linked},
        entries=[e.to_dict() for e in linked],
        rules={rule.id: colour},
    )
    inc.timeline.append(_matched(rule, got, colour, ts))
    _rescore(inc, aggregation)
    state.recent = []
    state.incident = inc
    return inc


def due(state: SiteCorrelation, info: SiteInfo, now: int, rules: SiteRules, aggregation=None) -> list[IncidentEvent]:
    """What the site's clock (`now`) brings due: absence rules whose window ran out with nothing answering
    fire, and an all-clear incident whose quiet period ran out resolves (`closed`)."""
    out: list[IncidentEvent] = []
    by_id = rules.by_id
    for p in sorted((p for p in state.pending if p.deadline < now), key=lambda p: (p.deadline, p.rule_id)):
        state.pending.remove(p)
        rule = by_id.get(p.rule_id)
        if rule is None:  # the rule was removed by a reload
            continue
        first = Entry(**p.first)
        colour = rule_severity(rule, [first])
        inc = state.incident
        if inc is not None:
            inc.updated_at = p.deadline
            _apply(inc, rule, [first], colour, p.deadline, rules)
            _rescore(inc, aggregation)
            out.append(_event(inc, info, "update", p.deadline, rules))
        else:
            inc = _open(state, rule, [first], colour, p.deadline, f"{rule.id}|{first.id}", aggregation)
            out.append(_event(inc, info, "open", p.deadline, rules))
    inc = state.incident
    if inc is not None and inc.quiet_until is not None and inc.quiet_until < now:
        at = inc.quiet_until
        inc.timeline.append({"ts": at, "what": "resolved: all clear for the quiet period", "hazard_id": None})
        inc.updated_at = at
        state.incident = None
        out.append(_event(inc, info, "closed", at, rules))
    return out


def correlate(
    state: SiteCorrelation,
    hazard: HazardEvent,
    info: SiteInfo,
    window_ms: int,
    aggregation=None,
    rules: SiteRules | None = None,
) -> list[IncidentEvent]:
    """Feed one hazard event of a site; returns the incident events it causes."""
    if hazard.kind in NOT_CORRELATED or hazard.event == "suppressed":
        return []
    rules = rules or SiteRules([], window_ms)
    ts = hazard.ts
    out = due(state, info, ts, rules, aggregation)  # what ran out before this event comes first
    inc = state.incident
    if hazard.event == "update":
        if inc is None or hazard.hazard_id not in inc.hazard_ids:
            return out
        inc.timeline.append(
            {
                "ts": ts,
                "what": f"{hazard.kind} {hazard.sensor_id} flapping ({hazard.flap_count} opens)",
                "hazard_id": hazard.hazard_id,
            }
        )
        inc.updated_at = ts
        return out + [_event(inc, info, "update", ts, rules)]
    by_id = rules.by_id
    if hazard.event == "clear":
        for e in state.recent:
            if e.id == hazard.hazard_id:
                e.cleared_at = ts
        if inc is not None:
            for d in inc.entries:
                if d["id"] == hazard.hazard_id:
                    d["cleared_at"] = ts
        cleared = Entry(**{**entry_of(hazard).to_dict(), "cleared_at": ts})
        # A clear ends the wait of an absence rule on it: answered, or the situation it waited on is gone.
        state.pending = [
            p
            for p in state.pending
            if p.first["id"] != hazard.hazard_id
            and not (p.rule_id in by_id and answered(by_id[p.rule_id], p, cleared, "clear"))
        ]
        state.recent = [e for e in state.recent if _kept(e, ts, rules.keep_ms)]
        if inc is None or hazard.hazard_id not in inc.open_hazard_ids:
            return out
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
            return out + [_event(inc, info, "update", ts, rules)]
        state.pending = []  # nothing of the site is open: no rule waits on it
        if rules.quiet_ms <= 0:
            state.incident = None
            return out + [_event(inc, info, "closed", ts, rules)]
        # All clear: resolved only once it stays quiet, so a situation that comes back stays one incident.
        inc.quiet_until = ts + rules.quiet_ms
        inc.timeline.append(
            {
                "ts": ts,
                "what": f"all clear; resolves after {rules.quiet_ms / 1000:g} s without a hazard",
                "hazard_id": None,
            }
        )
        return out + [_event(inc, info, "update", ts, rules)]

    if hazard.event != "open":
        return out
    new = entry_of(hazard)
    state.pending = [
        p for p in state.pending if not (p.rule_id in by_id and answered(by_id[p.rule_id], p, new, "open"))
    ]
    known = state.recent + ([Entry(**d) for d in inc.entries] if inc is not None else [])
    for rule in rules.rules:
        p = arm(rule, new, window_ms, known)
        if p is not None:
            state.pending.append(p)

    if inc is not None:
        if hazard.hazard_id in inc.hazard_ids:  # re-delivered after a restart: already linked
            return out
        if inc.quiet_until is not None:
            inc.quiet_until = None
            inc.timeline.append({"ts": ts, "what": "a hazard opened again before it resolved", "hazard_id": None})
        _link(inc, hazard, new)
        inc.updated_at = ts
        pool = [Entry(**d) for d in inc.entries]
        for rule in rules.rules:
            got = fires(rule, pool, new, window_ms)
            if got is None:
                continue
            colour = rule_severity(rule, got)
            # A rule is written down when it first matches, and again only when it raises the incident.
            if rule.id not in inc.rules or SEVERITY_RANK[colour] > SEVERITY_RANK[inc.severity]:
                _apply(inc, rule, got, colour, ts, rules)
        _rescore(inc, aggregation)
        return out + [_event(inc, info, "update", ts, rules)]

    state.recent = [e for e in state.recent if _kept(e, ts, rules.keep_ms) and e.id != new.id]
    state.recent.append(new)
    matches = [(r, got) for r in rules.rules if (got := fires(r, state.recent, new, window_ms)) is not None]
    best = _best(matches)
    if best is None:
        return out
    rule, got, colour = best
    inc = _open(state, rule, got, colour, ts, hazard.hazard_id, aggregation, _describe(hazard))
    for other, got2 in matches:
        if other.id != rule.id:
            _apply(inc, other, got2, rule_severity(other, got2), ts, rules)
    return out + [_event(inc, info, "open", ts, rules)]


def _kept(e: Entry, ts: int, keep_ms: int) -> bool:
    """A site remembers a hazard while it may still count: still open, or opened within the longest window."""
    return e.cleared_at is None or ts - e.start <= keep_ms
