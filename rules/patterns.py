"""THROWAWAY STAND-IN for the lead's rules/patterns.py (merged from main later; main's file wins).

Only the interface the scope stage builds against: Matcher, CorrelationRule, Entry,
load_correlation_rules, scope_key, fires, absence_due.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from .models import SEVERITY_RANK, Severity

Scope = Literal["area", "site", "enterprise", "county", "city", "province"]
Kind = Literal["coactive", "window", "sequence", "absence", "count"]


@dataclass
class Entry:
    id: str
    site_id: str
    sensor_id: str
    area: str
    quantity: str
    kind: str
    rule_id: str
    severity: str
    sector: str
    enterprise_id: str
    region: str
    start: int
    cleared_at: int | None = None
    event: str = "hazard"


class Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantity: list[str] | None = None
    kind: list[str] | None = None
    rule: list[str] | None = None
    sector: list[str] | None = None
    min_severity: Severity | None = None
    event: Literal["hazard", "incident"] = "hazard"

    def matches(self, e: Entry) -> bool:
        return (
            e.event == self.event
            and (self.quantity is None or e.quantity in self.quantity)
            and (self.kind is None or e.kind in self.kind)
            and (self.rule is None or e.rule_id in self.rule)
            and (self.sector is None or e.sector in self.sector)
            and (self.min_severity is None or SEVERITY_RANK[e.severity] >= SEVERITY_RANK[self.min_severity])
        )


class CorrelationRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    kind: Kind
    scope: Scope
    sectors: list[str] | None = None
    all_of: list[Matcher] | None = None
    any_of: list[Matcher] | None = None
    count: int = 1
    distinct: Literal["hazards", "sensors", "sites"] = "hazards"
    first: Matcher | None = None
    then: Matcher | None = None
    missing: Matcher | Literal["clear"] | None = None
    window_s: float | None = None
    severity: Severity | Literal["worst", "worst+1"] = "worst"
    text: dict[str, str] = {}
    action: dict[str, str] = {}
    basis: str = ""


class CorrelationRuleError(ValueError):
    def __init__(self, issues: list[str]):
        super().__init__("\n".join(issues))
        self.issues = issues


def load_correlation_rules(folder) -> list[CorrelationRule]:
    out: list[CorrelationRule] = []
    issues: list[str] = []
    for path in sorted(Path(folder).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        for i, raw in enumerate(data.get("rules", [])):
            try:
                out.append(CorrelationRule.model_validate(raw))
            except Exception as exc:
                issues.append(f"{path}:{i}: {exc}")
    if issues:
        raise CorrelationRuleError(issues)
    return out


def scope_key(scope: Scope, e: Entry) -> str:
    if scope == "enterprise":
        return e.enterprise_id
    if scope == "county":
        return e.region[:6]
    if scope == "city":
        return e.region[:4] + "00"
    if scope == "province":
        return e.region[:2] + "0000"
    if scope == "site":
        return e.site_id
    return f"{e.site_id}/{e.area}"


def _distinct(rule: CorrelationRule, es: list[Entry]) -> int:
    attr = {"hazards": "id", "sensors": "sensor_id", "sites": "site_id"}[rule.distinct]
    return len({getattr(e, attr) for e in es})


def _assign(matchers: list[Matcher], es: list[Entry]) -> list[Entry] | None:
    if not matchers:
        return []
    for e in es:
        if matchers[0].matches(e):
            rest = _assign(matchers[1:], [x for x in es if x is not e])
            if rest is not None:
                return [e, *rest]
    return None


def fires(rule: CorrelationRule, entries: list[Entry], new: Entry, now: int) -> list[Entry] | None:
    pool = [e for e in entries if e.id != new.id] + [new]
    if rule.sectors is not None:
        pool = [e for e in pool if e.sector in rule.sectors]
    if new not in pool:
        return None
    if rule.kind == "coactive":
        pool = [e for e in pool if e.cleared_at is None or e.cleared_at > now]
    elif rule.kind in ("window", "count") and rule.window_s is not None:
        w = int(rule.window_s * 1000)
        pool = [e for e in pool if abs(new.start - e.start) <= w]
    if rule.kind == "sequence":
        if rule.then is None or rule.first is None or not rule.then.matches(new):
            return None
        w = int((rule.window_s or 0) * 1000)
        firsts = [e for e in pool if e is not new and rule.first.matches(e) and 0 <= new.start - e.start <= w]
        return [firsts[0], new] if firsts else None
    if rule.all_of:
        got = _assign(rule.all_of, pool)
        if got is None or new not in got:
            return None
        return got
    if rule.any_of:
        hit = [e for e in pool if any(m.matches(e) for m in rule.any_of)]
        if new in hit and _distinct(rule, hit) >= rule.count:
            return hit
    return None


def absence_due(rule: CorrelationRule, entries: list[Entry], now: int) -> list[Entry]:
    if rule.kind != "absence" or rule.first is None:
        return []
    w = int((rule.window_s or 0) * 1000)
    out = []
    for f in entries:
        if not rule.first.matches(f) or f.start + w > now:
            continue
        if rule.missing == "clear":
            if f.cleared_at is not None and f.cleared_at <= f.start + w:
                continue
        elif rule.missing is not None:
            m = rule.missing
            if any(m.matches(e) and f.start <= e.start <= f.start + w for e in entries if e is not f):
                continue
        out.append(f)
    return out
