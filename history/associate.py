"""Which hazards come before accidents: association of hazard kinds/rules with accidents at the same enterprise.

The unit is an enterprise-day. An item (a hazard kind or rule, within a sector) is present on a day if
such a hazard opened that day; the outcome is an accident at the same enterprise within the next
`window_days`. Per item and sector: support P(item ∧ outcome), confidence P(outcome | item), the base
rate P(outcome) over every enterprise-day of that sector, lift = confidence / base, and a z-score of
the co-occurrence count against the base rate (one-sided, normal approximation) so that a few chance
coincidences are not reported as an association. Pure code: lists in, dataclasses out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

DAY_MS = 86_400_000


@dataclass(frozen=True)
class HazardFact:
    """A hazard opening, reduced to what the analysis needs."""

    enterprise_id: str
    sector: str
    kind: str
    rule_id: str
    start: int


@dataclass(frozen=True)
class AccidentFact:
    """An accident at an enterprise."""

    enterprise_id: str
    ts: int


@dataclass(frozen=True)
class Association:
    """One item (by kind or rule) in one sector against accidents within the window."""

    by: str  # "kind" or "rule"
    item: str
    sector: str
    days_with_item: int  # enterprise-days on which it opened
    days_with_both: int  # … followed by an accident within the window
    days: int  # enterprise-days of the sector observed
    days_with_accident_after: int
    support: float
    confidence: float
    base_rate: float
    lift: float
    z: float
    associated: bool


@dataclass(frozen=True)
class Risk:
    """An enterprise's risk from its recent hazards weighted by their associations (noisy-OR of confidences)."""

    enterprise_id: str
    score: float
    items: tuple[str, ...]


def _outcome(accident_days: Iterable[int], n_days: int, window: int) -> np.ndarray:
    """Per day d: an accident on a day in (d, d + window]."""
    hit = np.zeros(n_days + window + 1, dtype=np.int64)
    for a in accident_days:
        if 0 <= a < len(hit):
            hit[a] = 1
    cum = np.concatenate([[0], np.cumsum(hit)])
    d = np.arange(n_days)
    return (cum[d + window + 1] - cum[d + 1]) > 0


def associate(
    hazards: list[HazardFact],
    accidents: list[AccidentFact],
    enterprise_sectors: dict[str, tuple[str, ...]],
    start_ms: int,
    end_ms: int,
    *,
    window_days: int = 30,
    min_lift: float = 1.5,
    min_both: int = 3,
    min_z: float = 3.0,
) -> list[Association]:
    """Associations of every (kind, sector) and (rule, sector) seen, strongest first.

    Only days whose whole window lies inside [start, end) count, so no outcome is unknown."""
    n_days = (end_ms - start_ms) // DAY_MS - window_days
    if n_days <= 0:
        raise ValueError(f"the history must be longer than the window ({window_days} days)")
    acc_days: dict[str, list[int]] = defaultdict(list)
    for a in accidents:
        acc_days[a.enterprise_id].append((a.ts - start_ms) // DAY_MS)
    outcome = {e: _outcome(acc_days.get(e, []), n_days, window_days) for e in enterprise_sectors}
    # item days per (by, item, sector) per enterprise
    present: dict[tuple[str, str, str], dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for h in hazards:
        d = (h.start - start_ms) // DAY_MS
        if 0 <= d < n_days and h.enterprise_id in outcome:
            present[("kind", h.kind, h.sector)][h.enterprise_id].add(d)
            present[("rule", h.rule_id, h.sector)][h.enterprise_id].add(d)
    base: dict[str, tuple[int, int]] = {}
    for sector in {s for ss in enterprise_sectors.values() for s in ss}:
        members = [e for e, ss in enterprise_sectors.items() if sector in ss]
        base[sector] = (len(members) * n_days, int(sum(outcome[e].sum() for e in members)))
    out = []
    for (by, item, sector), per_ent in present.items():
        days, with_acc = base[sector]
        n_item = sum(len(ds) for ds in per_ent.values())
        n_both = sum(int(outcome[e][sorted(ds)].sum()) for e, ds in per_ent.items())
        p = with_acc / days if days else 0.0
        conf = n_both / n_item if n_item else 0.0
        lift = conf / p if p > 0 else (math.inf if n_both else 0.0)
        sd = math.sqrt(n_item * p * (1 - p)) if 0 < p < 1 else 0.0
        z = (n_both - n_item * p) / sd if sd > 0 else 0.0
        out.append(
            Association(
                by=by,
                item=item,
                sector=sector,
                days_with_item=n_item,
                days_with_both=n_both,
                days=days,
                days_with_accident_after=with_acc,
                support=n_both / days if days else 0.0,
                confidence=conf,
                base_rate=p,
                lift=lift,
                z=z,
                associated=lift >= min_lift and n_both >= min_both and z >= min_z,
            )
        )
    out.sort(key=lambda a: (not a.associated, -a.lift, -a.days_with_both, a.by, a.item, a.sector))
    return out


def risk_scores(
    recent: list[HazardFact], associations: list[Association], enterprises: Iterable[str], *, by: str = "kind"
) -> list[Risk]:
    """Per enterprise: 1 − Π(1 − confidence) over the associated items among its recent hazards, highest first."""
    strong = {(a.item, a.sector): a.confidence for a in associations if a.by == by and a.associated}
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for h in recent:
        key = (h.kind if by == "kind" else h.rule_id, h.sector)
        if key in strong:
            seen[h.enterprise_id].add(key)
    out = []
    for e in enterprises:
        keep = 1.0
        for key in seen.get(e, ()):
            keep *= 1.0 - strong[key]
        out.append(Risk(e, round(1.0 - keep, 4), tuple(sorted(f"{i}@{s}" for i, s in seen.get(e, ())))))
    out.sort(key=lambda r: (-r.score, r.enterprise_id))
    return out
