"""Every rule kind of the catalogue, on the small registry, with unit and property tests."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.catalog import load_catalog
from rules.engine import RuleEngine
from rules.publish import MaintenanceWindow
from sensors.schema import Frame

from .rules_helpers import T0

BASE = {"description": {"zh": "测试", "en": "test"}, "standard": "test"}
GAS = {
    **BASE,
    "id": "hazchem.gas.level",
    "kind": "threshold",
    "match": {"quantity": ["combustible_gas"]},
    "levels": [
        {"kind": "high", "above": 25, "clear": 22, "colour": "yellow"},
        {"kind": "high_high", "above": 50, "clear": 45, "colour": "orange"},
    ],
}
TEMP = {
    **BASE,
    "id": "hazchem.temp.level",
    "kind": "threshold",
    "match": {"quantity": ["temperature"]},
    "levels": [
        {"kind": "high", "above": "registry.high", "colour": "yellow"},
        {"kind": "high_high", "above": "registry.high_high", "colour": "orange"},
    ],
}
RATE = {
    **BASE,
    "id": "hazchem.temp.rate",
    "kind": "rate",
    "match": {"quantity": ["temperature"]},
    "direction": "rise",
    "limit": 2,
    "per_s": 60,
    "window_s": 60,
    "min_samples": 3,
    "colour": "yellow",
}
OFFLINE = {
    **BASE,
    "id": "hazchem.offline",
    "kind": "offline",
    "match": {"quantity": "*"},
    "periods": 3,
    "colour": "blue",
    "site_colour": "yellow",
}
STUCK = {
    **BASE,
    "id": "hazchem.stuck",
    "kind": "stuck",
    "match": {"quantity": ["combustible_gas"]},
    "samples": 5,
    "colour": "blue",
}
FAULT = {**BASE, "id": "hazchem.fault", "kind": "fault", "match": {"quantity": "*"}, "colour": "blue"}
FAN = {
    **BASE,
    "id": "hazchem.gas.fan",
    "kind": "interlock",
    "match": {"quantity": ["combustible_gas"]},
    "trigger": {"quantity": ["combustible_gas"], "kinds": ["high_high"]},
    "expect": {"quantity": ["exhaust_fan_running"], "op": ">=", "value": 1, "within_s": 10},
}


def catalog(tmp_path, *rules, flapping=(3, 60), name="c"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    doc = {
        "sector": "hazchem",
        "flapping": {"max_changes": flapping[0], "window_s": flapping[1]},
        "rules": [dict(r) for r in rules],
    }
    (d / "hazchem.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return load_catalog(d)


def feed(engine, points, *, site="site-a", advance=True):
    """points: (t_s, {sensor: value} or {sensor: (value, quality)}); one frame each, one batch each."""
    events = []
    for t, values in points:
        readings = []
        for sid, v in values.items():
            q = "good"
            if isinstance(v, tuple):
                v, q = v
            readings.append({"sensor_id": sid, "value": v, "quality": q})
        b = engine.new_batch()
        b.add(Frame(site_id=site, ts=T0 + int(t * 1000), readings=readings))
        r = engine.process(b.build())
        events += r.hazards
        if advance:
            events += engine.advance(T0 + int(t * 1000)).hazards
    return events


def seq(events, kind=None):
    return [(e.event, e.kind) for e in events if kind is None or e.kind == kind]


# --- thresholds: hysteresis, delays ------------------------------------------------------------------
def test_separate_clear_threshold(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS))
    ev = feed(eng, [(0, {"a-gas1": 26}), (1, {"a-gas1": 23}), (2, {"a-gas1": 22.5}), (3, {"a-gas1": 21.9})])
    assert seq(ev) == [("open", "high"), ("clear", "high")] and ev[1].ts == T0 + 3000


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=60))
def test_hysteresis_opens_once_per_crossing(tmp_path_factory, mini_registry, values):
    eng = RuleEngine(mini_registry, catalog(tmp_path_factory.mktemp("h"), GAS, flapping=(10**6, 1)))
    ev = feed(eng, [(i, {"a-gas1": v}) for i, v in enumerate(values)], advance=False)
    # count crossings by hand: above 25 from "closed", back below 22 from "open"
    opens, is_open = 0, False
    for v in values:
        if not is_open and v >= 25:
            opens, is_open = opens + 1, True
        elif is_open and v <= 22:
            is_open = False
    assert sum(1 for e in ev if e.kind == "high" and e.event == "open") == opens


def test_on_delay_and_off_delay(tmp_path, mini_registry):
    rule = {**TEMP, "on_delay_s": 3, "off_delay_s": 5}
    eng = RuleEngine(mini_registry, catalog(tmp_path, rule))
    # a 2 s spike is too short; then 4 s above opens at the 3rd second; a 3 s dip does not clear
    script = [
        (0, 61),
        (1, 61),
        (2, 20),
        (10, 61),
        (11, 61),
        (12, 61),
        (13, 61),
        (14, 20),
        (15, 20),
        (16, 20),
        (17, 61),
        (18, 20),
        (19, 20),
        (20, 20),
        (21, 20),
        (22, 20),
        (23, 20),
    ]
    ev = feed(eng, [(t, {"a-temp1": v}) for t, v in script])
    assert seq(ev) == [("open", "high"), ("clear", "high")]
    assert ev[0].ts == T0 + 13_000 and ev[1].ts == T0 + 23_000


# --- rate of change --------------------------------------------------------------------------------
def test_rate_fires_on_a_steep_rise_with_uneven_sampling(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, RATE))
    times = [0, 7, 9, 20, 31, 33, 45, 58, 60, 75, 90]  # uneven
    ev = feed(eng, [(t, {"a-temp1": 20 + 0.05 * t}) for t in times])  # 3 °C/min
    assert seq(ev, "rate_rise") == [("open", "rate_rise")]
    assert ev[0].peak == pytest.approx(3.0, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(slope_per_min=st.floats(-5, 1.9), jitter=st.lists(st.floats(0.5, 10), min_size=5, max_size=40))
def test_rate_never_fires_below_its_limit(tmp_path_factory, mini_registry, slope_per_min, jitter):
    eng = RuleEngine(mini_registry, catalog(tmp_path_factory.mktemp("r"), RATE))
    t, points = 0.0, []
    for dt in jitter:
        t += dt
        points.append((t, {"a-temp1": 30 + slope_per_min * t / 60}))
    assert seq(feed(eng, points, advance=False), "rate_rise") == []


# --- offline ---------------------------------------------------------------------------------------
def test_offline_fires_once_per_outage_even_if_the_sensor_never_returns(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, OFFLINE))
    ev = feed(eng, [(t, {"a-gas1": 1, "a-temp1": 20, "a-o2": 20.9, "a-fan": 0}) for t in range(5)])
    ev += feed(eng, [(t, {"a-temp1": 20, "a-o2": 20.9, "a-fan": 0}) for t in range(5, 20)])  # gas goes silent
    for now in range(20, 40):
        ev += eng.advance(T0 + now * 1000).hazards
    gas = [e for e in ev if e.sensor_id == "a-gas1"]
    assert seq(gas) == [("open", "offline")]
    assert gas[0].start == T0 + 4000 + 3000  # k × period after the last reading
    assert not [e for e in ev if e.sensor_id == "b-gas1"]  # never seen: never offline


def test_offline_gap_found_on_arrival_equals_timer(tmp_path, mini_registry):
    """Whether the timer ran during the outage or not, the same hazard (same id) is reported."""
    script = [(0, {"a-gas1": 1}), (1, {"a-gas1": 1}), (30, {"a-gas1": 1})]
    with_timer = RuleEngine(mini_registry, catalog(tmp_path, OFFLINE))
    a = feed(with_timer, script[:2]) + with_timer.advance(T0 + 20_000).hazards + feed(with_timer, script[2:])
    without = RuleEngine(mini_registry, catalog(tmp_path, OFFLINE, name="d"))
    b = feed(without, script, advance=False)
    key = lambda evs: sorted((e.hazard_id, e.kind, e.event, e.start) for e in evs)
    # the only reporting sensor of its site: the site is offline, once, not the sensor too
    assert key(a) == key(b) and [k[1:3] for k in key(a)] in (
        [("site_offline", "clear"), ("site_offline", "open")],
        [("site_offline", "open"), ("site_offline", "clear")],
    )


def test_whole_site_silent_is_one_site_offline(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, OFFLINE))
    all_a = {"a-gas1": 1, "a-temp1": 20, "a-o2": 20.9, "a-fan": 0}
    ev = feed(eng, [(t, all_a) for t in range(5)])
    for now in range(5, 60):
        ev += eng.advance(T0 + now * 1000).hazards
    assert seq(ev) == [("open", "site_offline")]
    ev2 = feed(eng, [(60, all_a)])
    assert seq(ev2) == [("clear", "site_offline")]


# --- stuck and fault -------------------------------------------------------------------------------
def test_stuck_fires_on_a_frozen_value_and_clears_on_change(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, STUCK))
    ev = feed(eng, [(t, {"a-gas1": 3.0}) for t in range(6)] + [(6, {"a-gas1": 3.1})])
    assert seq(ev) == [("open", "stuck"), ("clear", "stuck")] and ev[0].ts == T0 + 4000


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(5, 200), batch=st.integers(1, 50))
def test_stuck_never_fires_on_a_noisy_signal(tmp_path_factory, mini_registry, seed, n, batch):
    values = (5 + np.random.default_rng(seed).normal(0, 0.2, n)).round(3)
    eng = RuleEngine(mini_registry, catalog(tmp_path_factory.mktemp("s"), STUCK))
    # with rounding, two equal neighbours can happen; four in a row essentially cannot
    ev = []
    for i in range(0, n, batch):
        b = eng.new_batch()
        for j in range(i, min(n, i + batch)):
            b.add(Frame(site_id="site-a", ts=T0 + j * 1000, readings=[{"sensor_id": "a-gas1", "value": values[j]}]))
        ev += eng.process(b.build()).hazards
    runs = max(
        (len(r) for r in "".join("s" if a == b else "." for a, b in zip(values, values[1:], strict=False)).split(".")),
        default=0,
    )
    assert (seq(ev, "stuck") != []) == (runs >= 4)


def test_out_of_range_and_bad_quality_are_sensor_faults_not_process_hazards(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAULT))
    ev = feed(eng, [(0, {"a-gas1": 120}), (1, {"a-gas1": (80, "bad")}), (2, {"a-gas1": 1})])
    assert seq(ev) == [("open", "sensor_fault"), ("clear", "sensor_fault")]


# NAMUR NE 43 on a 0-100 %LEL detector: failure below -2.5 or above 106.25, measurement band -1.25 .. 103.125.
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_zero_drift_is_a_measurement_not_a_fault(tmp_path_factory, mini_registry, seed):
    drift = np.random.default_rng(seed).normal(-0.4, 0.5, 300).clip(-2.4, 3).round(2)
    eng = RuleEngine(mini_registry, catalog(tmp_path_factory.mktemp("z"), GAS, FAULT))
    assert feed(eng, [(t, {"a-gas1": float(v)}) for t, v in enumerate(drift)]) == []


def test_a_detector_pegged_just_past_full_scale_alarms_and_is_no_fault(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAULT))
    ev = feed(eng, [(t, {"a-gas1": 104.0}) for t in range(10)])
    assert seq(ev) == [("open", "high"), ("open", "high_high")]


def test_a_failure_level_shorter_than_the_on_delay_is_no_fault(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAULT))
    ev = feed(
        eng, [(0, {"a-gas1": 1}), (1, {"a-gas1": -3}), (2, {"a-gas1": -3}), (4, {"a-gas1": -3}), (5, {"a-gas1": 1})]
    )
    assert ev == []  # held 3 s < 4 s, and never read as a low value either


def test_a_held_failure_opens_once_and_clears_only_back_in_the_band(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAULT))
    points = [(t, {"a-gas1": 110}) for t in range(6)] + [(6, {"a-gas1": 104}), (7, {"a-gas1": 20})]
    ev = feed(eng, points)
    assert seq(ev) == [("open", "sensor_fault"), ("clear", "sensor_fault")]
    assert ev[0].ts == T0 + 4000 and ev[0].threshold == pytest.approx(106.25)
    assert ev[1].ts == T0 + 7000  # 104 is in the transition zone: the fault stays open


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_fault_delay_does_not_depend_on_batch_cuts(tmp_path_factory, mini_registry, cut, seed):
    rng = np.random.default_rng(seed)
    values = rng.choice([1.0, 104.0, 110.0, -3.0, -1.0], size=40).tolist()
    frames = [
        Frame(site_id="site-a", ts=T0 + t * 1000, readings=[{"sensor_id": "a-gas1", "value": v}])
        for t, v in enumerate(values)
    ]

    def run(size):
        eng = RuleEngine(mini_registry, catalog(tmp_path_factory.mktemp("c"), GAS, FAULT))
        out = []
        for k in range(0, len(frames), size):
            b = eng.new_batch()
            for f in frames[k : k + size]:
                b.add(f)
            out += [(e.event, e.kind, e.ts) for e in eng.process(b.build()).hazards]
        return out

    assert run(cut) == run(1)


@pytest.mark.parametrize(
    ("value", "held_s", "fault"),
    [
        # NAMUR NE 43 on a 0-100 %LEL detector: measurement -1.25 .. 103.125, failure <= -2.5 or >= 106.25
        (-1.0, 10, False),  # zero drift: a measurement
        (103.0, 10, False),  # just past full scale: a measurement (and a gas alarm)
        (-2.0, 10, False),  # transition zone below: not yet a fault
        (105.0, 10, False),  # transition zone above: not yet a fault
        (-3.0, 3, False),  # beyond the failure limit, but shorter than the 4 s on-delay
        (-3.0, 5, True),  # beyond the failure limit, held: a fault
        (110.0, 5, True),
    ],
)
def test_ne43_bands_and_on_delay(tmp_path, mini_registry, value, held_s, fault):
    eng = RuleEngine(mini_registry, catalog(tmp_path, FAULT))
    ev = feed(eng, [(0, {"a-gas1": 1.0})] + [(t, {"a-gas1": value}) for t in range(1, held_s + 2)])
    assert (("open", "sensor_fault") in [(e.event, e.kind) for e in ev]) is fault


@pytest.mark.parametrize(
    ("back_to", "clears"), [(104.0, False), (106.0, False), (103.0, True), (50.0, True), (-2.0, False), (-1.0, True)]
)
def test_ne43_an_open_fault_clears_only_inside_the_measurement_band(tmp_path, mini_registry, back_to, clears):
    eng = RuleEngine(mini_registry, catalog(tmp_path, FAULT))
    ev = feed(eng, [(t, {"a-gas1": 120.0}) for t in range(6)] + [(t, {"a-gas1": back_to}) for t in range(6, 9)])
    assert (("clear", "sensor_fault") in [(e.event, e.kind) for e in ev]) is clears


# --- flapping, maintenance -------------------------------------------------------------------------
def test_flapping_collapses_a_burst_into_one_held_hazard(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, flapping=(3, 60)))
    burst = [(t, {"a-gas1": 30 if t % 2 == 0 else 10}) for t in range(20)]
    ev = feed(eng, burst)
    assert [e.event for e in ev] == ["open", "clear", "open", "clear", "open", "update"]
    assert ev[-1].flapping and ev[-1].flap_count == 3
    ev2 = feed(eng, [(t, {"a-gas1": 10}) for t in range(20, 90)])
    assert [e.event for e in ev2] == ["clear"] and ev2[0].flapping and ev2[0].flap_count > 3
    assert ev2[0].hazard_id == ev[-1].hazard_id


def test_maintenance_suppresses_then_re_evaluates(tmp_path, mini_registry):
    window = MaintenanceWindow("mw-1", "a-gas1", T0 + 5000, T0 + 20_000, "张工", "calibration")
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS), maintenance=[window])
    ev = feed(eng, [(t, {"a-gas1": 60 if t >= 8 else 1}) for t in range(0, 25)])
    assert [e.event for e in ev if e.ts < T0 + 20_000] == ["suppressed", "suppressed"]  # H and HH, counted
    assert eng.publisher.suppressed["mw-1"] == 2
    after = [e for e in ev if e.ts >= T0 + 20_000]
    assert seq(after) == [("open", "high"), ("open", "high_high")] and after[0].ts == T0 + 20_000
    assert "maintenance" in after[0].note


# --- interlocks ------------------------------------------------------------------------------------
def test_interlock_failed_when_the_fan_does_not_start(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAN))
    ev = feed(eng, [(t, {"a-gas1": 60, "a-fan": 0}) for t in range(15)] + [(15, {"a-gas1": 60, "a-fan": 1})])
    failed = [e for e in ev if e.kind == "interlock_failed"]
    assert seq(failed) == [("open", "interlock_failed"), ("clear", "interlock_failed")]
    assert failed[0].start == T0 + 10_000 and failed[0].severity == "red" and failed[0].level == 4
    assert failed[0].sensor_id == "a-fan"


def test_interlock_satisfied_in_time_is_silent(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAN))
    ev = feed(eng, [(t, {"a-gas1": 60, "a-fan": 1 if t >= 6 else 0}) for t in range(20)])
    assert ("open", "high_high") in seq(ev)  # the trigger fired, so the interlock was armed
    assert not [e for e in ev if e.kind == "interlock_failed"]


def test_interlock_deadline_fires_on_the_timer_alone(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAN))
    feed(eng, [(0, {"a-gas1": 60, "a-fan": 0})])
    assert seq(eng.advance(T0 + 9_000).hazards) == []
    assert seq(eng.advance(T0 + 10_000).hazards) == [("open", "interlock_failed")]


# --- reload ----------------------------------------------------------------------------------------
def test_set_rules_keeps_state_of_unchanged_rules(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, TEMP))
    feed(eng, [(0, {"a-gas1": 30, "a-temp1": 61})])
    changed_temp = {**TEMP, "id": "hazchem.temp.level2"}
    eng.set_rules(catalog(tmp_path, GAS, changed_temp, name="v2"))
    ev = feed(eng, [(1, {"a-gas1": 10, "a-temp1": 20})])
    # gas rule kept its state (its hazard clears); the renamed temperature rule starts fresh
    assert seq(ev) == [("clear", "high")] and ev[0].sensor_id == "a-gas1"
