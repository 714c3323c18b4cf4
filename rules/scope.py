"""Stage 2 of correlation: enterprise and region (county, city, province) scopes.

The worker re-keys every correlated hazard event and every site incident event into the
repartition topic, one `Record` per scope level that has rules (docs/scope-stage.md). Here each
scope key (`county:320583`, `enterprise:9132…`) has its own state — plain data, checkpointed as
JSON — and the patterns of `rules/correlation/*.yaml` (rules/patterns.py) decide when its entries
make an incident. At most one incident is open per (scope key, rule): open → update (an entry
linked, severity up, never down) → all linked entries clear → closed after `quiet_ms` with
nothing new. The input is at least once and, across sites, in any order: a record already
seen changes nothing, and windows are on event time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import orjson

from .correlation import NOT_CORRELATED, entry_of
from .models import SEVERITY_RANK, HazardEvent, IncidentEvent, TimelineEntry, stable_id
from .patterns import CorrelationRule, Entry, Matcher, Pending, answered, arm, fires, rule_severity, scope_key

STAGE2_SCOPES: tuple[str, ...] = ("enterprise", "county", "city", "province")
QUIET_MS = 10 * 60_000  # all linked entries clear this long, nothing new: the incident closes


@dataclass
class Record:
    """One repartition record: an entry of one scope key, and what happened to it (`open`, `update`, `clear`)."""

    scope: str
    key: str
    op: str
    ts: int  # event time of this event
    entry: Entry

    @property
    def state_key(self) -> str:
        """`<scope>:<key>`: the repartition topic's message key and the state's name."""
        return f"{self.scope}:{self.key}"

    def to_json(self) -> bytes:
        """The record's value on the repartition topic."""
        d = {"scope": self.scope, "key": self.key, "op": self.op, "ts": self.ts, "entry": self.entry.to_dict()}
        return orjson.dumps(d)

    @classmethod
    def from_json(cls, raw: bytes) -> Record:
        """Inverse of to_json."""
        d = orjson.loads(raw)
        return cls(d["scope"], d["key"], d["op"], int(d["ts"]), Entry(**d["entry"]))


def hazard_entry(h: HazardEvent) -> tuple[str, Entry] | None:
    """(op, entry) of a hazard event; None for what correlation ignores (instrument health, suppressed)."""
    if h.kind in NOT_CORRELATED or h.event == "suppressed":
        return None
    e = entry_of(h)
    e.cleared_at = h.end if h.event == "clear" else None
    return h.event, e


def incident_entry(i: IncidentEvent) -> tuple[str, Entry] | None:
    """(op, entry) of a site incident event; None for a scope incident (scopes do not feed themselves)."""
    if i.scope != "site":
        return None
    e = Entry(
        id=i.incident_id,
        site_id=i.site_id,
        sensor_id="",
        area="",
        quantity="",
        kind="incident",
        rule_id=i.rule_id,
        severity=i.severity,
        sector=i.sector,
        enterprise_id=i.enterprise_id,
        region=i.region,
        start=i.opened_at,
        cleared_at=i.closed_at,
        event="incident",
    )
    return {"open": "open", "update": "update", "closed": "clear"}[i.status], e


def scope_records(event: object, scopes: Iterable[str]) -> list[Record]:
    """The repartition records of one stage-1 event: one per scope level in `scopes` (none for a notice)."""
    if isinstance(event, HazardEvent):
        got = hazard_entry(event)
    elif isinstance(event, IncidentEvent):
        got = incident_entry(event)
    else:
        return []
    if got is None:
        return []
    op, entry = got
    ts = event.ts if isinstance(event, HazardEvent) else event.updated_at
    return [Record(s, scope_key(s, entry), op, ts, entry) for s in scopes]  # type: ignore[arg-type]


def rules_scopes(rules: Iterable[CorrelationRule]) -> list[str]:
    """The stage-2 scope levels some rule uses, in STAGE2_SCOPES order."""
    used = {r.scope for r in rules}
    return [s for s in STAGE2_SCOPES if s in used]


@dataclass
class ScopeIncident:
    """The open incident of one (scope key, rule)."""

    incident_id: str
    rule_id: str
    opened_at: int
    updated_at: int
    severity: str
    entry_ids: list[str]
    open_ids: list[str]
    timeline: list[dict]
    quiet_since: int | None = None  # every linked entry has cleared since then


@dataclass
class ScopeState:
    """Correlation state of one scope key: its entries (pruned), open incidents by rule, fired absences."""

    entries: dict[str, dict] = field(default_factory=dict)
    incidents: dict[str, ScopeIncident] = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)  # absence rules waiting (rules/patterns.py Pending)
    # rule → entries of its closed incidents: they made their incident and do not make another
    used: dict[str, list[str]] = field(default_factory=dict)
    clock: int = 0  # newest event time seen
    risk: str | None = None  # enterprise keys: the risk colour last published (rules/risk.py)

    def to_dict(self) -> dict:
        """Plain data for the checkpoint; it shares containers with the state, so serialise it at once
        (asdict's deep copy of a busy county's entries stalled the worker's loop)."""
        return {**vars(self), "incidents": {k: dict(vars(i)) for k, i in self.incidents.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> ScopeState:
        """Inverse of to_dict."""
        return cls(
            entries=dict(d.get("entries", {})),
            incidents={k: ScopeIncident(**v) for k, v in d.get("incidents", {}).items()},
            pending=list(d.get("pending", [])),
            used={k: list(v) for k, v in d.get("used", {}).items()},
            clock=int(d.get("clock", 0)),
            risk=d.get("risk"),
        )


def _matchers(rule: CorrelationRule) -> list[Matcher]:
    ms = [*(rule.all_of or []), *(rule.any_of or [])]
    ms += [m for m in (rule.first, rule.then, rule.missing) if isinstance(m, Matcher)]
    return ms


def relevant(rule: CorrelationRule, e: Entry) -> bool:
    """Does the entry belong to the rule's incident (its sectors, one of its matchers)?"""
    if rule.sectors is not None and e.sector not in rule.sectors:
        return False
    return any(m.matches(e) for m in _matchers(rule))


TOP_SEVERITY = max(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__)


def may_matter(rule: CorrelationRule, e: Entry) -> bool:
    """`relevant` at any colour: an entry's severity may still rise, the fields matched besides never change."""
    return relevant(rule, replace(e, severity=TOP_SEVERITY))


def _what(e: Entry) -> str:
    # The first word is the hazard kind: the alert service routes on it (`kinds`).
    if e.event == "incident":
        return f"incident {e.rule_id} at {e.site_id} ({e.severity})"
    return f"{e.kind} {e.quantity} at {e.site_id} {e.sensor_id} ({e.severity})"


class ScopeEngine:
    """Feeds records to per-key state; returns the scope incident events they cause."""

    def __init__(
        self,
        rules: Iterable[CorrelationRule],
        *,
        names: Callable[[str, str], str] | None = None,
        quiet_ms: int = QUIET_MS,
        default_window_ms: int = 300_000,
    ):
        self.names = names or (lambda scope, key: f"{scope} {key}")
        self.quiet_ms = quiet_ms
        self.default_window_ms = default_window_ms  # a `window` rule that gives none
        self.states: dict[str, ScopeState] = {}
        self.rules: dict[str, list[CorrelationRule]] = {}
        self.set_rules(rules)

    def set_rules(self, rules: Iterable[CorrelationRule]) -> list[IncidentEvent]:
        """Use these rules from now on (a reload); what the keys remember is kept, but a new rule
        sees only entries kept for the old ones and those from now on. An open incident of a rule
        that is gone, or whose scope changed, is closed at its key's clock: returns those events."""
        old = {r.id: r for rs in self.rules.values() for r in rs}
        self.rules = {}
        for r in rules:
            if r.scope in STAGE2_SCOPES:
                self.rules.setdefault(r.scope, []).append(r)
        # Entries are kept while a rule may still use them: the longest window plus the quiet period.
        longest = max((r.window_ms(self.default_window_ms) for rs in self.rules.values() for r in rs), default=0)
        self.keep_ms = longest + self.quiet_ms
        out = []
        for sk in sorted(self.states):
            st = self.states[sk]
            scope, key = sk.split(":", 1)
            kept = {r.id for r in self.rules.get(scope, [])}
            for rule_id in sorted((set(st.incidents) - kept) & set(old)):
                inc = st.incidents.pop(rule_id)
                ts = max(st.clock, inc.updated_at)
                inc.timeline.append({"ts": ts, "what": "closed: its rule was removed", "hazard_id": None})
                inc.updated_at = ts
                st.used.setdefault(rule_id, []).extend(inc.entry_ids)  # should the rule come back
                out.append(self._event(scope, key, st, old[rule_id], inc, "closed", ts))
            st.pending = [p for p in st.pending if p["rule_id"] in kept]
        return out

    def snapshot(self, state_key: str) -> dict:
        """One scope key's state as plain data."""
        return self.states.get(state_key, ScopeState()).to_dict()

    def restore(self, state_key: str, snap: dict | None) -> None:
        """Put back (or, with None, forget) one scope key's state."""
        if snap is None:
            self.states.pop(state_key, None)
        else:
            self.states[state_key] = ScopeState.from_dict(snap)

    def feed(self, rec: Record) -> list[IncidentEvent]:
        """One record; a duplicate or a stale one changes nothing and returns []."""
        st = self.states.setdefault(rec.state_key, ScopeState())
        out = self._expire(rec.scope, rec.key, st, rec.ts)  # quiet periods that ended before this event
        st.clock = max(st.clock, rec.ts)
        e, prev = rec.entry, st.entries.get(rec.entry.id)
        if (
            prev is None
            and rec.scope != "enterprise"
            and not any(may_matter(r, e) for r in self.rules.get(rec.scope, []))
        ):
            # No rule of this region scope can ever use it: not kept (most hazards concern none).
            # An enterprise keeps everything: its risk colour counts every open hazard and incident.
            return out
        if rec.op == "clear":
            if prev is None:  # its open is yet to come (out of order) or was pruned: remember the clear
                st.entries[e.id] = e.to_dict() | {"cleared_at": rec.ts if e.cleared_at is None else e.cleared_at}
                return out
            if prev["cleared_at"] is not None:
                return out
            prev["cleared_at"] = rec.ts if e.cleared_at is None else e.cleared_at
            self._answer(rec.scope, st, Entry(**prev), "clear")
            return out + self._cleared(rec.scope, rec.key, st, Entry(**prev), rec.ts)
        if prev is not None:
            if prev["cleared_at"] is not None or SEVERITY_RANK[e.severity] <= SEVERITY_RANK[prev["severity"]]:
                return out  # seen already (a redelivery), or an update that is no worse
            prev["severity"] = e.severity
            return out + self._worse(rec.scope, rec.key, st, Entry(**prev), rec.ts)
        st.entries[e.id] = e.to_dict()
        self._answer(rec.scope, st, e, "open")
        return out + self._new(rec.scope, rec.key, st, e, rec.ts)

    def advance(self, now: int, state_keys: Iterable[str] | None = None) -> list[IncidentEvent]:
        """Timers up to event time `now`: quiet periods that ended, absences that fell due, pruning."""
        out: list[IncidentEvent] = []
        for sk in sorted(self.states if state_keys is None else state_keys):
            st = self.states.get(sk)
            if st is None:
                continue
            scope, key = sk.split(":", 1)
            out += self._expire(scope, key, st, now)
            out += self._absences(scope, key, st, now)
            self._prune(st, now)
        return out

    # --- the lifecycle ------------------------------------------------------------------

    def _new(self, scope: str, key: str, st: ScopeState, e: Entry, ts: int) -> list[IncidentEvent]:
        out: list[IncidentEvent] = []
        # A rule acts on a new entry only if one of its matchers takes it: `fires` needs the entry
        # among the witnesses, an absence needs it as its first, an incident links only relevant
        # entries. Most hazards concern no regional rule; they must not walk the key's entries.
        rules = [rule for rule in self.rules.get(scope, []) if relevant(rule, e)]
        if not rules:
            return out
        entries = [Entry(**d) for d in st.entries.values()]
        for rule in rules:
            if rule.kind == "absence":
                known = [x for x in entries if x.id != e.id]
                p = arm(rule, e, self.default_window_ms, known)
                if p is not None:
                    st.pending.append(p.to_dict())  # fired by the timer (advance) unless answered first
            inc = st.incidents.get(rule.id)
            if inc is not None:
                if relevant(rule, e) and rule.kind != "absence":
                    out.append(self._link(scope, key, st, rule, inc, e, ts))
                continue
            if rule.kind == "absence":
                continue
            used = set(st.used.get(rule.id, ()))
            got = fires(rule, [x for x in entries if x.id not in used], e, self.default_window_ms)
            if got and rule.kind != "sequence":
                # The witnesses `fires` found, and every other relevant entry open now: the incident
                # is the situation, not the smallest proof of it (its colour is the worst of all).
                ids = {g.id for g in got}
                got += [x for x in entries if x.id not in ids | used and x.cleared_at is None and relevant(rule, x)]
            if got:
                out.append(self._open(scope, key, st, rule, got, ts))
        return out

    def _open(
        self, scope: str, key: str, st: ScopeState, rule: CorrelationRule, got: list[Entry], ts: int
    ) -> IncidentEvent:
        got = sorted(got, key=lambda x: (x.start, x.id))
        inc = ScopeIncident(
            # Named by its earliest entry, not the one that arrived last: entries of different sites
            # reach a scope key in whatever order the workers sent them, a replay in another.
            incident_id=stable_id("INC", scope, key, rule.id, got[0].id),
            rule_id=rule.id,
            opened_at=ts,
            updated_at=ts,
            severity=rule_severity(rule, got),
            entry_ids=[g.id for g in got],
            open_ids=[g.id for g in got if g.cleared_at is None],
            timeline=[{"ts": g.start, "what": _what(g), "hazard_id": g.id} for g in got],
        )
        st.incidents[rule.id] = inc
        return self._event(scope, key, st, rule, inc, "open", ts)

    def _link(
        self, scope: str, key: str, st: ScopeState, rule: CorrelationRule, inc: ScopeIncident, e: Entry, ts: int
    ) -> IncidentEvent:
        inc.entry_ids.append(e.id)
        if e.cleared_at is None:
            inc.open_ids.append(e.id)
            inc.quiet_since = None
        inc.timeline.append({"ts": ts, "what": f"linked {_what(e)}", "hazard_id": e.id})
        self._raise(rule, st, inc, ts)
        inc.updated_at = max(inc.updated_at, ts)
        return self._event(scope, key, st, rule, inc, "update", inc.updated_at)

    def _worse(self, scope: str, key: str, st: ScopeState, e: Entry, ts: int) -> list[IncidentEvent]:
        out = []
        for rule in self.rules.get(scope, []):
            inc = st.incidents.get(rule.id)
            if inc is not None and e.id in inc.entry_ids:
                inc.timeline.append({"ts": ts, "what": f"{_what(e)} worse", "hazard_id": e.id})
                self._raise(rule, st, inc, ts)
                inc.updated_at = max(inc.updated_at, ts)
                out.append(self._event(scope, key, st, rule, inc, "update", inc.updated_at))
        return out

    def _cleared(self, scope: str, key: str, st: ScopeState, e: Entry, ts: int) -> list[IncidentEvent]:
        out = []
        for rule in self.rules.get(scope, []):
            inc = st.incidents.get(rule.id)
            if inc is None or e.id not in inc.open_ids:
                continue
            inc.open_ids.remove(e.id)
            inc.timeline.append({"ts": ts, "what": f"cleared {_what(e)}", "hazard_id": e.id})
            inc.updated_at = max(inc.updated_at, ts)
            if not inc.open_ids:
                inc.quiet_since = inc.updated_at
            out.append(self._event(scope, key, st, rule, inc, "update", inc.updated_at))
        return out

    def _raise(self, rule: CorrelationRule, st: ScopeState, inc: ScopeIncident, ts: int) -> None:
        """Severity from the linked entries; it only goes up (a lower colour is never silently shown)."""
        sev = rule_severity(rule, [Entry(**st.entries[i]) for i in inc.entry_ids if i in st.entries])
        if SEVERITY_RANK[sev] > SEVERITY_RANK[inc.severity]:
            inc.timeline.append({"ts": ts, "what": f"raised to {sev}", "hazard_id": None})
            inc.severity = sev

    def _expire(self, scope: str, key: str, st: ScopeState, now: int) -> list[IncidentEvent]:
        out = []
        for rule in self.rules.get(scope, []):
            inc = st.incidents.get(rule.id)
            if inc is None or inc.quiet_since is None or now < inc.quiet_since + self.quiet_ms:
                continue
            end = inc.quiet_since + self.quiet_ms  # event time, not the timer's: a restart closes it the same
            inc.timeline.append({"ts": end, "what": "resolved: all clear for the quiet period", "hazard_id": None})
            inc.updated_at = end
            del st.incidents[rule.id]
            st.used.setdefault(rule.id, []).extend(inc.entry_ids)
            out.append(self._event(scope, key, st, rule, inc, "closed", end))
        return out

    def _answer(self, scope: str, st: ScopeState, e: Entry, event: str) -> None:
        """An open or a clear that ends an absence rule's wait."""
        by_id = {r.id: r for r in self.rules.get(scope, [])}
        st.pending = [
            p
            for p in st.pending
            if not (p["rule_id"] in by_id and answered(by_id[p["rule_id"]], Pending(**p), e, event))
        ]

    def _absences(self, scope: str, key: str, st: ScopeState, now: int) -> list[IncidentEvent]:
        out = []
        by_id = {r.id: r for r in self.rules.get(scope, [])}
        due = sorted((p for p in st.pending if p["deadline"] <= now), key=lambda p: (p["deadline"], p["first"]["id"]))
        st.pending = [p for p in st.pending if p["deadline"] > now]
        for p in due:
            rule = by_id.get(p["rule_id"])
            if rule is None:
                continue
            first = Entry(**st.entries.get(p["first"]["id"], p["first"]))
            inc = st.incidents.get(rule.id)
            if inc is None:
                out.append(self._open(scope, key, st, rule, [first], p["deadline"]))
            elif first.id not in inc.entry_ids:
                out.append(self._link(scope, key, st, rule, inc, first, p["deadline"]))
        return out

    def _prune(self, st: ScopeState, now: int) -> None:
        """Forget cleared entries no rule can use any more (and not linked to an open incident)."""
        linked = {i for inc in st.incidents.values() for i in inc.entry_ids}
        gone = [
            i
            for i, d in st.entries.items()
            if d["cleared_at"] is not None and now - d["cleared_at"] > self.keep_ms and i not in linked
        ]
        for i in gone:
            del st.entries[i]
        if gone:
            kept = set(st.entries)
            st.used = {r: [i for i in ids if i in kept] for r, ids in st.used.items()}
            st.used = {r: ids for r, ids in st.used.items() if ids}

    # --- what the incident says -----------------------------------------------------------

    def _event(
        self, scope: str, key: str, st: ScopeState, rule: CorrelationRule, inc: ScopeIncident, status: str, ts: int
    ) -> IncidentEvent:
        linked = [Entry(**st.entries[i]) for i in inc.entry_ids if i in st.entries]
        title, summary = situation(rule, inc, linked, self.names(scope, key))
        # The worst entry (first linked among equals) speaks for the incident's sector and region.
        head = max(linked, key=lambda x: SEVERITY_RANK[x.severity]) if linked else None
        sector = rule.sectors[0] if rule.sectors and len(rule.sectors) == 1 else (head.sector if head else "")
        region = head.region if scope == "enterprise" and head else key
        return IncidentEvent(
            incident_id=inc.incident_id,
            status=status,
            severity=inc.severity,
            rule_id=rule.id,
            title=title,
            summary=summary,
            site_id="",
            site_name=self.names(scope, key),
            enterprise_id=key if scope == "enterprise" else "",
            enterprise_name=self.names(scope, key) if scope == "enterprise" else "",
            region=region,
            sector=sector,
            opened_at=inc.opened_at,
            updated_at=ts,
            closed_at=ts if status == "closed" else None,
            hazard_ids=list(inc.entry_ids),
            open_hazard_ids=list(inc.open_ids),
            timeline=[TimelineEntry(**t) for t in inc.timeline],
            scope=scope,
            scope_key=key,
        )


def situation(rule: CorrelationRule, inc: ScopeIncident, linked: list[Entry], name: str) -> tuple[str, str]:
    """Title and summary as it stands: the worst open entry, how many sites and sensors, which rule."""
    now = [e for e in linked if e.id in inc.open_ids] or linked  # at the close: what it was
    if not now:
        return f"{name}: {rule.id}", f"{inc.severity}: {rule.id}"
    w = max(now, key=lambda x: SEVERITY_RANK[x.severity])
    sites = sorted({e.site_id for e in now})
    sensors = {e.sensor_id for e in now if e.sensor_id}
    what = f"incident {w.rule_id}" if w.event == "incident" else f"{w.kind} {w.quantity}"
    more = f" and {len(sites) - 1} more site{'s' if len(sites) > 2 else ''}" if len(sites) > 1 else ""
    title = f"{name}: {what} at {w.site_id}{more}"
    if not inc.open_ids:
        title += " — all clear"
    n_open = len(inc.open_ids)
    state = (
        f"{n_open} of {len(inc.entry_ids)} linked open at {len(sites)} site{'s' if len(sites) != 1 else ''}"
        f" ({len(sensors)} sensor{'s' if len(sensors) != 1 else ''})"
        if n_open
        else f"all clear, {len(inc.entry_ids)} linked at {len(sites)} site{'s' if len(sites) != 1 else ''}"
    )
    text = rule.text.en
    return title, f"{inc.severity}: {state}; worst {what} at {w.site_id}; rule {rule.id} ({text})"
