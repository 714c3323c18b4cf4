"""Correlation rules as data: `rules/correlation/*.yaml`, their schema and the pure test of each kind.

A rule says which hazards belong together on one scope (an area or a site in the hot path; an
enterprise or a region code in the second stage) and what colour that situation is. Kinds:
- `coactive`: the matchers hold for hazards open at the same time, whenever each opened;
- `window`: the matchers hold for hazards that opened within `window_s` of each other;
- `count`: `count` hazards (or distinct sensors / sites) matching `any_of` opened within `window_s`;
- `sequence`: a `first` hazard, then a `then` hazard within `window_s`;
- `absence`: a `first` hazard and no `missing` one (or no clear of the first) within `window_s`;
  fired by the scope's clock, so an idle scope still fires.
Every function here is pure: the hot path, the second stage, replay and unit tests share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sensors.yamlsource import Issue, issue_from_pydantic, line_of, read_yaml

from .models import SEVERITY_RANK, Severity

CORRELATION_DIR = Path(__file__).resolve().parent / "correlation"
Scope = Literal["area", "site", "enterprise", "county", "city", "province"]
Kind = Literal["coactive", "window", "sequence", "absence", "count"]
HOT_SCOPES = frozenset({"area", "site"})  # evaluated per site in the worker; the rest in the second stage
COLOURS = ("blue", "yellow", "orange", "red")


@dataclass
class Entry:
    """One hazard (or, for `event="incident"`, one site incident) as correlation sees it."""

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

    def to_dict(self) -> dict:
        """Plain data for a checkpoint."""
        return dict(vars(self))  # every field is a scalar: asdict's deep copy would only cost time


class Matcher(BaseModel):
    """What a hazard must be to take part; every field given must hold, an empty matcher takes any."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    quantity: list[str] | None = None
    kind: list[str] | None = None
    rule: list[str] | None = Field(None, description="catalogue rule ids")
    sector: list[str] | None = None
    min_severity: Severity | None = None
    event: Literal["hazard", "incident"] = "hazard"

    def matches(self, e: Entry) -> bool:
        """Does entry `e` meet every condition of this matcher?"""
        return (
            e.event == self.event
            and (self.quantity is None or e.quantity in self.quantity)
            and (self.kind is None or e.kind in self.kind)
            and (self.rule is None or e.rule_id in self.rule)
            and (self.sector is None or e.sector in self.sector)
            and (self.min_severity is None or SEVERITY_RANK[e.severity] >= SEVERITY_RANK[self.min_severity])
        )


class Text(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class CorrelationRule(BaseModel):
    """One correlation rule of a `rules/correlation/*.yaml` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, pattern=r"^[a-z0-9_.]+$")
    kind: Kind
    scope: Scope
    sectors: list[str] | None = Field(None, description="sectors whose hazards it sees; none: every sector")
    all_of: list[Matcher] | None = Field(None, description="each met by a different hazard")
    any_of: list[Matcher] | None = None
    count: int | None = Field(None, ge=1, description="all_of: how many of the matchers; any_of: how many hazards")
    distinct: Literal["hazards", "sensors", "sites"] = "hazards"
    first: Matcher | None = None
    then: Matcher | None = None
    missing: Matcher | Literal["clear"] | None = None
    window_s: float | None = Field(None, gt=0, description="none on a `window` rule: SAFEWATCH_CORRELATION_WINDOW_S")
    severity: Severity | Literal["worst", "worst+1"] = "worst"
    text: Text
    action: Text
    basis: str = Field(min_length=1, description="the standard it comes from, `derived`, or this deployment's choice")

    @model_validator(mode="after")
    def _shape(self) -> CorrelationRule:
        needs = {
            "coactive": ("all_of|any_of",),
            "window": ("all_of|any_of",),
            "count": ("any_of", "window_s"),
            "sequence": ("first", "then", "window_s"),
            "absence": ("first", "missing", "window_s"),
        }[self.kind]
        for need in needs:
            if not any(getattr(self, f) is not None for f in need.split("|")):
                raise ValueError(f"a {self.kind} rule needs `{need.replace('|', '` or `')}`")
        if self.all_of is not None and self.any_of is not None:
            raise ValueError("give `all_of` or `any_of`, not both")
        if self.kind in ("sequence", "absence") and (self.all_of or self.any_of):
            raise ValueError(
                f"a {self.kind} rule takes `first` and `{'then' if self.kind == 'sequence' else 'missing'}`"
            )
        if self.all_of is not None and self.count is not None and self.count > len(self.all_of):
            raise ValueError(f"count {self.count} is more than the {len(self.all_of)} matchers of all_of")
        if self.scope == "area" and self.distinct == "sites":
            raise ValueError("an area is inside one site: `distinct: sites` cannot be met")
        return self

    @property
    def hot(self) -> bool:
        """Site and area rules run in the worker's hot path."""
        return self.scope in HOT_SCOPES

    def applies_to(self, sector: str) -> bool:
        """Does this rule see hazards of `sector`?"""
        return self.sectors is None or sector in self.sectors

    def window_ms(self, default_ms: int) -> int:
        """The rule's window in ms (a `window` rule without one takes the deployment's)."""
        return default_ms if self.window_s is None else int(self.window_s * 1000)


class CorrelationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[CorrelationRule]


class CorrelationRuleError(ValueError):
    """Correlation files that cannot be used; `issues` name file, line and field."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def _matchers(rule: CorrelationRule) -> list[tuple[tuple, Matcher]]:
    """Every matcher of a rule with its path inside the rule."""
    out: list[tuple[tuple, Matcher]] = []
    for name in ("all_of", "any_of"):
        out += [((name, i), m) for i, m in enumerate(getattr(rule, name) or [])]
    for name in ("first", "then", "missing"):
        m = getattr(rule, name)
        if isinstance(m, Matcher):
            out.append(((name,), m))
    return out


def load_correlation_rules(
    folder: str | Path = CORRELATION_DIR, sectors: set[str] | None = None, rule_ids: set[str] | None = None
) -> list[CorrelationRule]:
    """Every rule of every YAML file in `folder`, in file-name then file order; all problems at once.

    With `sectors` and `rule_ids` (the catalogue's), a sector or catalogue rule id that does not exist is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CorrelationRuleError([Issue(str(folder), None, "", "not a directory")])
    rules: list[CorrelationRule] = []
    issues: list[Issue] = []
    seen: dict[str, str] = {}
    for path in sorted(folder.glob("*.y*ml")):
        source = str(path)
        data, lines, found = read_yaml(path.read_text(encoding="utf-8"), source, "a mapping with `rules`")
        issues += found
        if data is None:
            continue
        try:
            parsed = CorrelationFile.model_validate(data)
        except ValidationError as exc:
            issues += [issue_from_pydantic(e, lines, source) for e in exc.errors()]
            continue
        for n, rule in enumerate(parsed.rules):
            line = lines.get(("rules", n, "id"))
            if rule.id in seen:
                issues.append(
                    Issue(source, line, f"rules[{n}].id", f"{rule.id!r} is already defined in {seen[rule.id]}")
                )
            seen[rule.id] = source
            for s in rule.sectors or []:
                if sectors is not None and s not in sectors:
                    issues.append(
                        Issue(
                            source, lines.get(("rules", n, "sectors")), f"rules[{n}].sectors", f"unknown sector {s!r}"
                        )
                    )
            for where, m in _matchers(rule) if rule_ids is not None else []:
                for rid in m.rule or []:
                    if rid not in rule_ids:  # type: ignore[operator]  # only walked when given
                        field = ".".join(f"[{x}]" if isinstance(x, int) else str(x) for x in where).replace(".[", "[")
                        line = line_of(("rules", n, *where, "rule"), lines)
                        issues.append(Issue(source, line, f"rules[{n}].{field}.rule", f"no catalogue rule {rid!r}"))
            rules.append(rule)
    if issues:
        raise CorrelationRuleError(issues)
    return rules


def scope_key(scope: Scope, e: Entry) -> str:
    """The key an entry has on a scope: its area, site, enterprise, or region code at that level."""
    if scope == "area":
        return f"{e.site_id}/{e.area}"
    if scope == "site":
        return e.site_id
    if scope == "enterprise":
        return e.enterprise_id
    if scope == "county":
        return e.region[:6]
    if scope == "city":
        return e.region[:4] + "00"
    return e.region[:2] + "0000"


def _distinct(rule: CorrelationRule, e: Entry) -> str:
    return {"hazards": e.id, "sensors": e.sensor_id or e.site_id, "sites": e.site_id}[rule.distinct]


def _assign(matchers: list[Matcher], entries: list[Entry], need: int, rule: CorrelationRule) -> list[Entry] | None:
    """Entries meeting `need` of the matchers, each matcher by a different entry (and distinct subject)."""
    best: list[Entry] | None = None

    def walk(i: int, used: list[Entry], met: int) -> bool:
        nonlocal best
        if met >= need:
            best = list(used)
            return True
        if i == len(matchers) or met + (len(matchers) - i) < need:
            return False
        for e in entries:
            fits = matchers[i].matches(e) and all(_distinct(rule, u) != _distinct(rule, e) for u in used)
            if fits and walk(i + 1, used + [e], met + 1):
                return True
        return walk(i + 1, used, met)  # leave this matcher unmet

    walk(0, [], 0)
    return best


def _holds(rule: CorrelationRule, entries: list[Entry]) -> list[Entry] | None:
    """The `all_of` / `any_of` condition over a set of candidate entries."""
    if rule.all_of is not None:
        return _assign(list(rule.all_of), entries, rule.count or len(rule.all_of), rule)
    matched = [e for e in entries if any(m.matches(e) for m in rule.any_of or [])]
    subjects: dict[str, Entry] = {}
    for e in matched:
        subjects.setdefault(_distinct(rule, e), e)
    return list(subjects.values()) if len(subjects) >= (rule.count or 1) else None


def fires(rule: CorrelationRule, entries: list[Entry], new: Entry, default_window_ms: int) -> list[Entry] | None:
    """The entries that make `rule` fire as `new` opens (it is among `entries`); None if it does not.

    `entries` are the scope's candidates, cleared ones included while they may still count. The
    new entry must take part: a situation that already held without it fired earlier. Order of
    arrival does not matter, only event time: a late hazard that opened first still pairs.
    """
    if rule.kind == "absence" or not rule.applies_to(new.sector):
        return None
    if rule.scope == "area":
        entries = [e for e in entries if e.area == new.area]
    others = [e for e in entries if e.id != new.id]
    if rule.kind == "sequence":
        return _sequence(rule, others, new, rule.window_ms(default_window_ms))
    if rule.kind == "coactive":
        # Open together: each was open when the later of the two opened.
        pool = [e for e in others if _overlap(e, new)]
        return _with(rule, new, pool)
    window = rule.window_ms(default_window_ms)
    near = [e for e in others if abs(e.start - new.start) <= window]
    # Only what a matcher takes can be a witness, so a span's answer depends on those alone, and
    # a span holding the same ones as the span before gives the same answer: skipped. (A county
    # in a storm holds thousands of hazards, few of them any one rule's.)
    matchers = [*(rule.all_of or []), *(rule.any_of or [])]
    able = [e for e in near if any(m.matches(e) for m in matchers)]
    before: list[str] | None = None
    # Every span of `window` that holds the new entry, from the earliest start it can begin at.
    for lo in sorted({e.start for e in near if e.start <= new.start} | {new.start}):
        pool = [e for e in able if lo <= e.start <= lo + window and new.start <= lo + window]
        ids = [e.id for e in pool]
        if ids == before:
            continue
        before = ids
        got = _with(rule, new, pool)
        if got is not None:
            return got
    return None


def _overlap(a: Entry, b: Entry) -> bool:
    """Were both open at one moment (event time)?"""
    a_end = a.cleared_at if a.cleared_at is not None else 2**62
    b_end = b.cleared_at if b.cleared_at is not None else 2**62
    return a.start < b_end and b.start < a_end


def _with(rule: CorrelationRule, new: Entry, pool: list[Entry]) -> list[Entry] | None:
    """The rule's condition over `pool` plus the new entry, which must take part."""
    # The new entry first, so the matching takes it wherever it can.
    got = _holds(rule, [new] + pool)
    return got if got is not None and any(e.id == new.id for e in got) else None


def _sequence(rule: CorrelationRule, others: list[Entry], new: Entry, window: int) -> list[Entry] | None:
    """`first` then `then` within the window, whichever of the two arrived last."""
    first, then = rule.first, rule.then
    assert first is not None and then is not None  # the schema requires both on a sequence rule
    if then.matches(new):
        before = [
            e
            for e in others
            if first.matches(e)
            and e.start <= new.start <= e.start + window
            and _distinct(rule, e) != _distinct(rule, new)
        ]
        if before:
            return [before[0], new]
    if first.matches(new):
        after = [
            e
            for e in others
            if then.matches(e)
            and new.start <= e.start <= new.start + window
            and _distinct(rule, e) != _distinct(rule, new)
        ]
        if after:
            return [new, after[0]]
    return None


@dataclass
class Pending:
    """An absence rule waiting: `first` opened and its window has not run out."""

    rule_id: str
    first: dict  # the Entry, as plain data
    deadline: int

    def to_dict(self) -> dict:
        """Plain data for a checkpoint."""
        return asdict(self)


def arm(rule: CorrelationRule, new: Entry, default_window_ms: int, known: Sequence[Entry] = ()) -> Pending | None:
    """An absence rule starts waiting when its `first` opens, unless a hazard already `known` answered it.

    (The answer can arrive before the first when input is out of order.)
    """
    if rule.kind != "absence" or not rule.applies_to(new.sector) or not rule.first.matches(new):  # type: ignore[union-attr]
        return None
    p = Pending(rule.id, new.to_dict(), new.start + rule.window_ms(default_window_ms))
    if any(answered(rule, p, e, "open") for e in known):
        return None
    return p


def answered(rule: CorrelationRule, p: Pending, e: Entry, event: str) -> bool:
    """Does hazard event `event` of `e` (open or clear) end the wait of `p` before its deadline?"""
    first = p.first
    if rule.scope == "area" and e.area != first["area"]:
        return False
    if rule.missing == "clear":
        return event == "clear" and e.id == first["id"] and (e.cleared_at or 0) <= p.deadline
    missing = rule.missing
    assert isinstance(missing, Matcher)  # the schema requires `missing` on an absence rule
    return event == "open" and e.id != first["id"] and first["start"] <= e.start <= p.deadline and missing.matches(e)


def rule_severity(rule: CorrelationRule, entries: list[Entry]) -> str:
    """The colour a rule gives: fixed, the worst of its entries, or one above that."""
    worst_rank = max((SEVERITY_RANK[e.severity] for e in entries), default=1)
    if rule.severity == "worst":
        return COLOURS[worst_rank - 1]
    if rule.severity == "worst+1":
        return COLOURS[min(worst_rank, 3)]
    return rule.severity
