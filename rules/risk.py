"""Enterprise risk colour (red / orange / yellow / blue) from what is open now and the supervision class.

The table is docs/scope-stage.md "Enterprise risk colour": the four colours are the national
four-level scale (红 / 橙 / 黄 / 蓝 = 重大 / 较大 / 一般 / 低); how open incidents, open hazards and the
supervision class map onto it is this deployment's choice (no national mapping was found).
Computed from an enterprise key's stage-2 state, so it follows exactly what that state holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import orjson

from .models import SEVERITY_RANK
from .scope import Record, ScopeEngine, ScopeState

COLOURS = {1: "blue", 2: "yellow", 3: "orange", 4: "red"}
# Supervision classes whose enterprise goes one colour up while anything is open: D is the
# closest supervision (重点监管) in the registry's A–D scale.
RAISED_CLASSES = frozenset({"D"})


@dataclass(frozen=True)
class Risk:
    """An enterprise's colour now and why; the value of the compacted `risk` topic."""

    enterprise_id: str
    colour: str
    reason: str
    open_incidents: int
    open_hazards: int
    supervision_class: str
    ts: int  # event time of the change

    def to_json(self) -> bytes:
        """JSON bytes for the `risk` topic."""
        return orjson.dumps(asdict(self))


def colour(incidents: Iterable[str], hazards: Iterable[str], supervision_class: str) -> tuple[str, str]:
    """(colour, reason) from the severities of the open incidents and hazards and the supervision class.

    An open incident gives its own colour; an open hazard not (yet) in an incident one colour
    below its own (a red hazard alone → orange); nothing open → blue; two or more open incidents
    one colour up; supervision class D one colour up while anything is open. Capped at red.
    """
    inc = sorted((SEVERITY_RANK[s] for s in incidents), reverse=True)
    haz = [SEVERITY_RANK[s] for s in hazards]
    rank, why = 1, "nothing open"
    if haz and max(haz) - 1 > rank:
        rank, why = max(haz) - 1, f"an open {COLOURS[max(haz)]} hazard"
    if inc and inc[0] >= rank:
        rank, why = inc[0], f"an open {COLOURS[inc[0]]} incident"
    if len(inc) >= 2:
        rank, why = rank + 1, f"{why}; {len(inc)} incidents open"
    if (inc or haz) and supervision_class in RAISED_CLASSES:
        rank, why = rank + 1, f"{why}; supervision class {supervision_class}"
    return COLOURS[min(rank, 4)], why


def enterprise_risk(enterprise_id: str, state: ScopeState, supervision_class: str, ts: int) -> Risk:
    """The colour of one enterprise from its stage-2 state: open site incidents, enterprise incidents, hazards."""
    open_entries = [e for e in state.entries.values() if e["cleared_at"] is None]
    incidents = [e["severity"] for e in open_entries if e["event"] == "incident"]
    incidents += [i.severity for i in state.incidents.values() if i.open_ids]
    hazards = [e["severity"] for e in open_entries if e["event"] == "hazard"]
    c, why = colour(incidents, hazards, supervision_class)
    return Risk(enterprise_id, c, why, len(incidents), len(hazards), supervision_class, ts)


def risk_change(enterprise_id: str, state: ScopeState, supervision_class: str, ts: int) -> Risk | None:
    """The enterprise's risk if its colour differs from the one last published (then remembered), else None."""
    r = enterprise_risk(enterprise_id, state, supervision_class, ts)
    if r.colour == state.risk:
        return None
    state.risk = r.colour
    return r


def feed_with_risk(engine: ScopeEngine, rec: Record, classes: Mapping[str, str] | None):
    """One record through the scope engine, then (when `classes` is given) its enterprise's risk if it changed.

    Shared by the scope stage and `safewatch replay`, so both give the same events."""
    events = engine.feed(rec)
    risk = None
    if classes is not None and rec.scope == "enterprise":
        risk = risk_change(rec.key, engine.states[rec.state_key], classes.get(rec.key, ""), rec.ts)
    return events, risk


def advance_with_risk(engine: ScopeEngine, now: int, keys: Iterable[str] | None, classes: Mapping[str, str] | None):
    """The engine's timers, then the risks they changed (an enterprise incident closed, say)."""
    keys = sorted(engine.states if keys is None else keys)
    events = engine.advance(now, keys)
    risks = []
    if classes is not None:
        for sk in keys:
            scope, key = sk.split(":", 1)
            if scope == "enterprise" and sk in engine.states:
                r = risk_change(key, engine.states[sk], classes.get(key, ""), now)
                if r is not None:
                    risks.append(r)
    return events, risks
