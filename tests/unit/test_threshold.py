"""Threshold rules: levels, deadband, and no flapping on a noisy signal at a set point."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.engine import RuleEngine

from .rules_helpers import frame, run, series


def kinds(events):
    return [(e.event, e.kind) for e in events]


def test_high_opens_once_and_clears_below_deadband(mini_registry):
    eng = RuleEngine(mini_registry)
    ev = series(eng, "site-a", "a-gas1", [1, 10, 26, 30, 24, 23, 22.4, 5])
    # open at 26 (>= 25); 24 and 23 are inside the deadband (25 - 2.5); 22.4 clears
    assert kinds(ev) == [("open", "high"), ("clear", "high")]
    opened, cleared = ev
    assert opened.value == 26 and opened.threshold == 25 and opened.level == 1
    assert cleared.peak == 30 and cleared.end == cleared.ts and cleared.start == opened.start
    assert opened.hazard_id == cleared.hazard_id


def test_jump_past_high_high_opens_both_levels_and_they_clear_separately(mini_registry):
    eng = RuleEngine(mini_registry)
    ev = series(eng, "site-a", "a-gas1", [0, 60, 49, 47, 30, 20])
    assert kinds(ev) == [("open", "high"), ("open", "high_high"), ("clear", "high_high"), ("clear", "high")]
    assert ev[1].severity == "orange" and ev[0].severity == "yellow"


def test_low_track_and_high_track_are_independent(mini_registry):
    eng = RuleEngine(mini_registry)
    ev = series(eng, "site-a", "a-o2", [20.9, 19.4, 19.6, 19.9, 24.0, 20.9])
    # 19.6 is inside the deadband (19.5 + 0.3); 19.9 clears the low; 24 opens the high
    assert kinds(ev) == [("open", "low"), ("clear", "low"), ("open", "high"), ("clear", "high")]
    assert ev[1].peak == 19.4


def test_sensor_with_only_high_high_is_level_two(mini_registry):
    # b-temp1 only has `high`; a-gas1's HH without its H is checked via levels directly
    eng = RuleEngine(mini_registry)
    ev = series(eng, "site-b", "b-temp1", [20, 61, 20])
    assert kinds(ev) == [("open", "high"), ("clear", "high")]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), noise=st.floats(0.05, 1.2), batch=st.integers(1, 40))
def test_noisy_signal_at_set_point_opens_at_most_once(mini_registry, seed, noise, batch):
    """Noise smaller than the deadband around the set point never flaps."""
    rng = np.random.default_rng(seed)
    values = (25.0 + rng.uniform(-noise, noise, 300)).round(3).tolist()
    eng = RuleEngine(mini_registry)
    ev = series(eng, "site-a", "a-gas1", values, batch=batch)
    assert [e.event for e in ev] in ([], ["open"])


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=80), batch=st.integers(1, 30))
def test_batching_does_not_change_results(mini_registry, values, batch):
    one = series(RuleEngine(mini_registry), "site-a", "a-gas1", values, batch=1)
    many = series(RuleEngine(mini_registry), "site-a", "a-gas1", values, batch=batch)
    assert [e.model_dump() for e in one] == [e.model_dump() for e in many]


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=80))
def test_events_alternate_open_clear_per_level(mini_registry, values):
    ev = series(RuleEngine(mini_registry), "site-a", "a-gas1", values)
    for kind in ("high", "high_high"):
        seq = [e.event for e in ev if e.kind == kind]
        assert seq == ["open", "clear"] * (len(seq) // 2) + (["open"] if len(seq) % 2 else [])


def test_bad_quality_is_stored_not_evaluated(mini_registry):
    from sensors.schema import Frame

    eng = RuleEngine(mini_registry)
    f = Frame(site_id="site-a", ts=1_764_000_000_000, readings=[{"sensor_id": "a-gas1", "value": 99, "quality": "bad"}])
    res = run(eng, f)
    assert res.hazards == [] and res.skipped["bad_quality"] == 1


def test_late_and_out_of_order_readings(mini_registry):
    eng = RuleEngine(mini_registry, lateness_s=60)
    run(eng, frame("site-a", 100, a_gas1=1))
    res = run(eng, frame("site-a", 90, a_gas1=99), frame("site-a", 10, a_gas1=99))
    assert res.hazards == []  # older than the sensor's newest: never evaluated
    assert res.skipped["out_of_order"] == 1 and res.late.tolist() == [1]


def test_unknown_sensor_and_wrong_site_are_rejected(mini_registry):
    eng = RuleEngine(mini_registry)
    b = eng.new_batch()
    b.add(frame("site-a", 0, a_gas1=1, nope=2, b_gas1=3))
    assert [r.reason for r in b.rejects] == ["unknown_sensor", "sensor_not_of_site"]
    assert len(b.build()) == 1
