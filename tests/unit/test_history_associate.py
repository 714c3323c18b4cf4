"""The accident–hazard association on a generated history: a planted association is found, a planted
non-association is not, and risk scores rank the enterprise with the predictive hazard first."""

from __future__ import annotations

import numpy as np

from history.associate import DAY_MS, AccidentFact, HazardFact, associate, risk_scores

START = 1_700_000_000_000 // DAY_MS * DAY_MS
DAYS = 730
WINDOW = 30


def history(seed: int = 3):
    """40 hazchem enterprises over two years. `high_high` (rule gas.hh) is followed by an accident within
    5–25 days half the time; `offline` is frequent and independent of accidents; accidents also happen
    at a low base rate on their own."""
    rng = np.random.default_rng(seed)
    ents = {f"E{i:02d}": ("hazchem",) for i in range(40)}
    hazards, accidents = [], []
    for e in ents:
        for day in range(DAYS):
            t = START + day * DAY_MS + int(rng.integers(0, DAY_MS))
            if rng.random() < 0.004:
                hazards.append(HazardFact(e, "hazchem", "high_high", "gas.hh", t))
                if rng.random() < 0.5:
                    accidents.append(AccidentFact(e, t + int(rng.integers(5, 26)) * DAY_MS))
            if rng.random() < 0.08:
                hazards.append(HazardFact(e, "hazchem", "offline", "offline", t))
            if rng.random() < 0.0015:
                accidents.append(AccidentFact(e, t))
    return ents, hazards, accidents


def test_the_planted_association_is_found_and_the_planted_non_association_is_not():
    ents, hazards, accidents = history()
    end = START + DAYS * DAY_MS
    found = {(a.by, a.item): a for a in associate(hazards, accidents, ents, START, end, window_days=WINDOW)}
    hh, off = found[("kind", "high_high")], found[("kind", "offline")]
    assert hh.associated and hh.lift > 3 and hh.confidence > 0.4, hh
    assert found[("rule", "gas.hh")].associated
    assert not off.associated and 0.7 < off.lift < 1.4, off
    # the figures are consistent with their counts
    assert hh.confidence == hh.days_with_both / hh.days_with_item
    assert abs(hh.lift - hh.confidence / hh.base_rate) < 1e-9
    assert hh.support == hh.days_with_both / hh.days


def test_a_few_chance_coincidences_are_not_an_association():
    ents = {"A": ("dust",), "B": ("dust",)}
    end = START + 400 * DAY_MS
    hazards = [HazardFact("A", "dust", "stuck", "stuck", START + 10 * DAY_MS)]
    accidents = [AccidentFact("A", START + 20 * DAY_MS)]
    (a,) = [x for x in associate(hazards, accidents, ents, START, end, window_days=WINDOW) if x.by == "kind"]
    assert a.lift > 10 and not a.associated  # one coincidence: huge lift, too few cases


def test_risk_ranks_the_enterprise_with_a_recent_predictive_hazard_first():
    ents, hazards, accidents = history()
    end = START + DAYS * DAY_MS
    found = associate(hazards, accidents, ents, START, end, window_days=WINDOW)
    recent = [
        HazardFact("E01", "hazchem", "high_high", "gas.hh", end - DAY_MS),
        HazardFact("E02", "hazchem", "offline", "offline", end - DAY_MS),
    ]
    risks = {r.enterprise_id: r for r in risk_scores(recent, found, ents)}
    assert risks["E01"].score > 0.4 and risks["E01"].items == ("high_high@hazchem",)
    assert risks["E02"].score == 0 and risks["E03"].score == 0


def test_only_fully_observed_days_count():
    ents = {"A": ("mine",)}
    # an accident 1 day before the end, after a hazard 2 days before: its window is cut off, so not counted
    end = START + 100 * DAY_MS
    got = associate(
        [HazardFact("A", "mine", "high", "r", end - 2 * DAY_MS)], [AccidentFact("A", end - DAY_MS)], ents, START, end
    )
    assert got == []
