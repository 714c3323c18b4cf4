"""The plant simulator: deterministic, healthy sensors never alarm, scenarios do what they say."""

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.registry import load_registry
from sensors.schema import DecodeError, Frame, Reading, decode_message, split_frame
from sensors.simulator import (
    MALFORMED_KINDS,
    PlantSimulator,
    Scenario,
    default_demo_scenarios,
    demo_leak_target,
    leak_sensor_ids,
)

START_MS = 1_750_000_000_000


@pytest.fixture(scope="module")
def reg():
    return load_registry()


def run(sim, n_ticks):
    """(tick index, topic, key, raw) of every message of the next n ticks."""
    return [(i, *m) for i in range(n_ticks) for m in sim.tick()]


def readings(messages):
    """sensor_id → [(tick, value)] from the messages that decode."""
    out = {}
    for i, _, _, raw in messages:
        try:
            msg = decode_message(raw)
        except DecodeError:
            continue
        for r in msg.readings if isinstance(msg, Frame) else [msg]:
            out.setdefault(r.sensor_id, []).append((i, r.value))
    return out


def in_alarm(sensor, value):
    return any(
        (name.startswith("high") and value >= sp) or (name.startswith("low") and value <= sp)
        for name, sp in sensor.alarms.set_points().items()
    )


def test_deterministic_for_a_seed(reg):
    a = run(PlantSimulator(reg, seed=7, start_ms=START_MS), 30)
    b = run(PlantSimulator(reg, seed=7, start_ms=START_MS), 30)
    c = run(PlantSimulator(reg, seed=8, start_ms=START_MS), 30)
    assert a == b
    assert a != c


def test_a_site_does_not_depend_on_the_others(reg):
    site = "ca-jy-pit01"
    alone = run(PlantSimulator(reg, seed=3, start_ms=START_MS, sites=[site]), 20)
    everything = run(PlantSimulator(reg, seed=3, start_ms=START_MS), 20)
    assert alone == [m for m in everything if m[2] == site]


def test_frames_topics_keys_and_times(reg):
    sim = PlantSimulator(reg, seed=0, start_ms=START_MS, tick_s=0.5)
    for i, topic, key, raw in run(sim, 10):
        msg = decode_message(raw)
        assert isinstance(msg, Frame)
        site = reg.sites[key]
        assert msg.site_id == key and topic == f"telemetry.{site.sector}"
        assert msg.ts == START_MS + i * 500
        assert {r.sensor_id for r in msg.readings} <= set(site.sensor_ids)


def test_each_sensor_sampled_at_its_period(reg):
    got = readings(run(PlantSimulator(reg, seed=0, start_ms=START_MS), 120))
    for sid, sensor in reg.sensors.items():
        ticks = [i for i, _ in got[sid]]
        assert ticks == [i for i in range(120) if i % sensor.period_s == 0], sid


def test_sequence_numbers_count_up(reg):
    sim = PlantSimulator(reg, seed=0, start_ms=START_MS, sites=["hz-zjg-tank01"])
    seqs = {}
    for _, _, _, raw in run(sim, 20):
        for r in decode_message(raw).readings:
            seqs.setdefault(r.sensor_id, []).append(r.seq)
    assert set(seqs) == set(reg.sites["hz-zjg-tank01"].sensor_ids)
    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values())


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_healthy_sensors_stay_in_range_and_out_of_alarm(seed):
    reg = load_registry()
    got = readings(run(PlantSimulator(reg, seed=seed, start_ms=START_MS), 600))
    for sid, values in got.items():
        s = reg.sensors[sid]
        assert all(s.range[0] <= v <= s.range[1] for _, v in values), sid
        assert not any(in_alarm(s, v) for _, v in values), sid


def test_healthy_signal_has_noise_and_drift(reg):
    got = readings(run(PlantSimulator(reg, seed=0, start_ms=START_MS), 300))
    values = np.array([v for _, v in got["ca-jy-pit01-launder-lvl01"]])  # range 0-250 mm, normal 120
    assert len(set(values)) > 50  # not stuck
    assert abs(values.mean() - 120) < 10
    assert 0.5 < np.diff(values).std() / np.sqrt(2) < 2.5  # noise ~0.75 % of the span (1.9 mm)


def test_leak_crosses_gas_high_high_only_in_its_window(reg):
    site, area = demo_leak_target(reg)
    gas_ids, temp_ids = leak_sensor_ids(reg, site, area)
    start, duration = 40.0, 60.0
    sim = PlantSimulator(reg, seed=1, start_ms=START_MS, scenarios=[Scenario("leak", site, start, duration, area=area)])
    got = readings(run(sim, 160))
    for gid in gas_ids:
        hh = reg.sensors[gid].alarms.high_high
        above = [i for i, v in got[gid] if v >= hh]
        assert above, gid
        assert all(start <= i < start + duration for i in above), gid
        assert max(v for _, v in got[gid]) == pytest.approx(60, abs=5)  # ~60 %LEL
    for tid in temp_ids:
        s = reg.sensors[tid]
        above = [i for i, v in got[tid] if v >= s.alarms.high]
        assert above and all(start <= i < start + duration for i in above), tid
        rise = max(v for _, v in got[tid]) - s.normal
        assert rise == pytest.approx(15, abs=3)
    # Other sensors of the site are untouched.
    others = [sid for sid in reg.sites[site].sensor_ids if sid not in gas_ids + temp_ids]
    assert not any(in_alarm(reg.sensors[sid], v) for sid in others for _, v in got[sid])


def test_leak_does_not_shift_other_sensors(reg):
    site, area = demo_leak_target(reg)
    plain = readings(run(PlantSimulator(reg, seed=1, start_ms=START_MS), 60))
    leak = Scenario("leak", site, 10, 30, area=area)
    leaky = readings(run(PlantSimulator(reg, seed=1, start_ms=START_MS, scenarios=[leak]), 60))
    gas, temp = leak_sensor_ids(reg, site, area)
    assert {k: v for k, v in plain.items() if k not in gas + temp} == {
        k: v for k, v in leaky.items() if k not in gas + temp
    }


def test_silent_sensor_absent_in_its_window(reg):
    sensor = "am-qd-mr01-mr-nh3-01"  # period 2 s
    sim = PlantSimulator(
        reg, seed=0, start_ms=START_MS, scenarios=[Scenario("silent", "am-qd-mr01", 20, 30, sensor_id=sensor)]
    )
    got = readings(run(sim, 80))
    ticks = [i for i, _ in got[sensor]]
    assert not any(20 <= i < 50 for i in ticks)
    assert any(i < 20 for i in ticks) and any(i >= 50 for i in ticks)
    neighbour = [i for i, _ in got["am-qd-mr01-mr-nh3-02"]]
    assert any(20 <= i < 50 for i in neighbour)


def test_malformed_burst_is_rejected_by_the_decoder(reg):
    site = "ca-jy-pit01"  # frames every tick
    sim = PlantSimulator(reg, seed=0, start_ms=START_MS, scenarios=[Scenario("malformed", site, 10, 8)])
    rejected = []
    for i, _, key, raw in run(sim, 30):
        try:
            decode_message(raw)
        except DecodeError as exc:
            assert key == site and 10 <= i < 18
            rejected.append((exc.reason, raw))
    assert len(rejected) == 8  # one a frame, cycling through the kinds
    reasons = [r for r, _ in rejected]
    assert reasons.count("malformed_json") == 2 and reasons.count("invalid_field") == 6
    details = " ".join(str(decode_error(raw)) for _, raw in rejected)
    assert "readings.0.value" in details  # a frame with a string value
    assert "value: Input should be a valid number" in details  # the "NaN" string
    assert "ts: Field required" in details
    # The frame with one string value keeps its other readings recoverable.
    frames = [orjson.loads(raw) for r, raw in rejected if r == "invalid_field" and b"readings" in raw]
    good, bad = split_frame(frames[0])
    assert good is not None and len(bad) == 1 and len(good.readings) == len(frames[0]["readings"]) - 1


def decode_error(raw):
    try:
        decode_message(raw)
    except DecodeError as exc:
        return exc
    return None


def test_readings_jsonl_flattens_the_same_stream(reg):
    frames = run(PlantSimulator(reg, seed=4, start_ms=START_MS), 15)
    lines = list(PlantSimulator(reg, seed=4, start_ms=START_MS).readings_jsonl(15))
    flat = [
        Reading(site_id=f.site_id, ts=f.ts, **r.model_dump())
        for *_, raw in frames
        for f in [decode_message(raw)]
        for r in f.readings
    ]
    assert [decode_message(line.encode()) for line in lines] == flat
    assert all("\n" not in line for line in lines)


def test_readings_jsonl_keeps_malformed_lines(reg):
    sim = PlantSimulator(
        reg,
        seed=0,
        start_ms=START_MS,
        sites=["ca-jy-pit01"],
        scenarios=[Scenario("malformed", "ca-jy-pit01", 0, len(MALFORMED_KINDS))],
    )
    bad = [line for line in sim.readings_jsonl(len(MALFORMED_KINDS)) if decode_error(line.encode())]
    assert len(bad) == len(MALFORMED_KINDS)


def test_default_demo_scenarios(reg):
    scenarios = default_demo_scenarios(reg, 10.0)
    assert [s.kind for s in scenarios] == ["leak", "silent", "malformed"]
    leak = scenarios[0]
    assert (leak.site_id, leak.area) == demo_leak_target(reg) and leak.start_s == 10.0
    assert scenarios[1].sensor_id in reg.sites[scenarios[1].site_id].sensor_ids
    # The simulator accepts them all, and each does what the demo promises in its window.
    silent, malformed = scenarios[1], scenarios[2]
    assert (silent.start_s, silent.duration_s, malformed.start_s, malformed.duration_s) == (20.0, 90.0, 15.0, 8.0)
    messages = run(PlantSimulator(reg, seed=0, start_ms=START_MS, scenarios=scenarios), 130)
    got = readings(messages)
    gas, _ = leak_sensor_ids(reg, leak.site_id, leak.area)
    for gid in gas:
        above = [i for i, v in got[gid] if v >= reg.sensors[gid].alarms.high_high]
        assert above and all(10 <= i < 70 for i in above), gid
    quiet = [i for i, _ in got[silent.sensor_id]]
    assert not [i for i in quiet if 20 <= i < 110] and min(quiet) < 20 and max(quiet) >= 110
    bad = [(i, key) for i, _, key, raw in messages if decode_error(raw)]
    assert bad == [(i, malformed.site_id) for i in range(15, 23)]


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (Scenario("leak", "nope", 0, 10, area="x"), "not simulated"),
        (Scenario("leak", "hz-zjg-tank01", 0, 10), "area is required"),
        (Scenario("leak", "hz-zjg-tank01", 0, 10, area="nowhere"), "no sensor"),
        (Scenario("leak", "ca-jy-pit01", 0, 10, area="mould"), "no combustible_gas"),
        (Scenario("silent", "hz-zjg-tank01", 0, 10, sensor_id="ca-jy-pit01-mould-pin01"), "not on site"),
        (Scenario("malformed", "hz-zjg-tank01", 0, 0), "duration_s"),
    ],
)
def test_bad_scenarios_are_refused(reg, scenario, message):
    with pytest.raises(ValueError, match=message):
        PlantSimulator(reg, start_ms=START_MS, scenarios=[scenario])


def test_unknown_site_filter(reg):
    with pytest.raises(ValueError, match="unknown site"):
        PlantSimulator(reg, start_ms=START_MS, sites=["nope"])


# --- state signals and the sensor-scripting scenario kinds ---------------------------------------


def qualities(messages):
    """sensor_id → [(tick, quality)] from the frames."""
    out = {}
    for i, _, _, raw in messages:
        for r in decode_message(raw).readings:
            out.setdefault(r.sensor_id, []).append((i, r.quality))
    return out


def scripted(reg, site, scenario, n_ticks, seed=0):
    """Readings of one site with and without the scenario."""
    plain = readings(run(PlantSimulator(reg, seed=seed, start_ms=START_MS, sites=[site]), n_ticks))
    sim = PlantSimulator(reg, seed=seed, start_ms=START_MS, sites=[site], scenarios=[scenario])
    return plain, readings(run(sim, n_ticks))


def window(values, sc):
    return [v for i, v in values if sc.start_s <= i < sc.start_s + sc.duration_s]


def outside(values, sc):
    return [(i, v) for i, v in values if not sc.start_s <= i < sc.start_s + sc.duration_s]


def test_state_signals_read_their_normal_state_exactly(reg):
    got = readings(run(PlantSimulator(reg, seed=5, start_ms=START_MS), 60))
    states = [s for s in reg.sensors.values() if s.is_state]
    assert states
    for s in states:
        assert {v for _, v in got[s.id]} == {float(s.normal or 0)}, s.id


def test_rate_ramps_at_its_slope_and_levels_off_under_the_set_point(reg):
    sid = "hz-wz-tank01-t201-temp01"  # 5 s sampling, normal 21, high 35
    sc = Scenario("rate", "hz-wz-tank01", 30, 150, sensor_id=sid, slope_per_min=5.0)
    plain, got = scripted(reg, "hz-wz-tank01", sc, 240)
    ramp = [(i, v) for i, v in got[sid] if 30 <= i < 90]  # before it levels off
    slope = np.polyfit([i for i, _ in ramp], [v for _, v in ramp], 1)[0] * 60
    assert slope == pytest.approx(5.0, abs=1.0)
    assert max(window(got[sid], sc)) < reg.sensors[sid].alarms.high
    assert max(window(got[sid], sc)) > 28  # it did climb most of the way
    assert outside(got[sid], sc) == outside(plain[sid], sc)


def test_a_falling_rate_levels_off_over_the_low_set_point(reg):
    sid = "ca-jy-pit02-mould-pin01"  # low 0.2 MPa
    sc = Scenario("rate", "ca-jy-pit02", 10, 40, sensor_id=sid, slope_per_min=-1.2)
    _, got = scripted(reg, "ca-jy-pit02", sc, 60)
    values = window(got[sid], sc)
    assert min(values) > reg.sensors[sid].alarms.low and values[-1] < 0.26


def test_stuck_repeats_one_exact_value_only_in_its_window(reg):
    sid = "hz-lh-unit01-r201-press01"
    sc = Scenario("stuck", "hz-lh-unit01", 20, 40, sensor_id=sid)
    plain, got = scripted(reg, "hz-lh-unit01", sc, 80)
    assert len(set(window(got[sid], sc))) == 1 and len(window(got[sid], sc)) == 20
    assert outside(got[sid], sc) == outside(plain[sid], sc)


def test_out_of_range_reads_past_the_range_with_its_quality(reg):
    sid = "mn-jn-ug01-l150-temp01"  # range 0-50 °C, 10 s sampling
    sc = Scenario("out_of_range", "mn-jn-ug01", 20, 30, sensor_id=sid, quality="bad")
    sim = PlantSimulator(reg, seed=0, start_ms=START_MS, sites=["mn-jn-ug01"], scenarios=[sc])
    messages = run(sim, 60)
    got, q = readings(messages), qualities(messages)
    assert window(got[sid], sc) == [55.0, 55.0, 55.0]
    assert {x for i, x in q[sid] if 20 <= i < 50} == {"bad"} and {x for i, x in q[sid] if i >= 50} == {"good"}
    assert all(v <= 50 for _, v in outside(got[sid], sc))


def test_flap_alternates_across_the_first_set_point_only(reg):
    sid = "st-jj-eaf01-roof-dflow01"  # high 6, high_high 12, 1 s sampling
    sc = Scenario("flap", "st-jj-eaf01", 10, 40, sensor_id=sid, flap_s=(4.0, 6.0))
    plain, got = scripted(reg, "st-jj-eaf01", sc, 60)
    a = reg.sensors[sid].alarms
    for i, v in got[sid]:
        if 10 <= i < 50 and (i - 10) % 10 < 4:
            assert a.high < v < a.high_high, (i, v)
        else:
            assert v == dict(plain[sid])[i], i  # the healthy value, well under the clear threshold


def test_excursion_passes_the_last_set_point_and_comes_back(reg):
    sid = "mn-jn-tailings01-dam-phreatic01"  # low-only: falls under low_low 6.0
    sc = Scenario("excursion", "mn-jn-tailings01", 60, 200, sensor_id=sid)
    plain, got = scripted(reg, "mn-jn-tailings01", sc, 300)
    values = window(got[sid], sc)
    assert min(values) < reg.sensors[sid].alarms.low_low
    assert outside(got[sid], sc) == outside(plain[sid], sc)


def test_interlock_response_acts_after_the_crossing(reg):
    trigger, valve = "hz-wz-tank01-t202-level01", "hz-wz-tank01-t202-inlet-esv01"
    sc = Scenario("interlock", "hz-wz-tank01", 20, 60, sensor_id=trigger, respond_after_s=8)
    _, got = scripted(reg, "hz-wz-tank01", sc, 100)
    hh = reg.sensors[trigger].alarms.high_high
    crossed = min(i for i, v in got[trigger] if v >= hh)
    closed = [i for i, v in got[valve] if v == 1.0]
    assert closed and crossed < closed[0] <= crossed + 8 + 2  # 2 s valve sampling
    assert max(closed) < 80 and {v for _, v in got[valve]} == {0.0, 1.0}
    # the other tank's valve does not move
    assert {v for _, v in got["hz-wz-tank01-t201-inlet-esv01"]} == {0.0}


def test_interlock_without_response_leaves_the_valve_alone(reg):
    sc = Scenario("interlock", "hz-wz-tank01", 20, 60, sensor_id="hz-wz-tank01-t202-level01", respond=False)
    _, got = scripted(reg, "hz-wz-tank01", sc, 100)
    assert {v for _, v in got["hz-wz-tank01-t202-inlet-esv01"]} == {0.0}


def test_interlock_responses_by_id_and_by_area(reg):
    only_shutoff = Scenario(
        "interlock",
        "ca-jy-pit02",
        10,
        40,
        sensor_id="ca-jy-pit02-mould-fin01",
        response_id="ca-jy-pit02-mould-shutoff01",
    )
    _, got = scripted(reg, "ca-jy-pit02", only_shutoff, 60)
    assert 1.0 in {v for _, v in got["ca-jy-pit02-mould-shutoff01"]}
    assert {v for _, v in got["ca-jy-pit02-mould-discharge01"]} == {0.0}
    # the launder is in another area than the valves: `area` names where the responses are
    launder = Scenario("interlock", "ca-jy-pit01", 10, 40, sensor_id="ca-jy-pit01-launder-lvl01", area="mould")
    _, got = scripted(reg, "ca-jy-pit01", launder, 60)
    assert all(1.0 in {v for _, v in got[f"ca-jy-pit01-mould-{s}01"]} for s in ("shutoff", "discharge"))


def test_whole_site_silence_sends_no_frame(reg):
    sc = Scenario("silent", "du-yx-dc02", 20, 30)
    sim = PlantSimulator(reg, seed=0, start_ms=START_MS, sites=["du-yx-dc01", "du-yx-dc02"], scenarios=[sc])
    keys = [(i, key) for i, _, key, _ in run(sim, 80)]
    assert not [i for i, key in keys if key == "du-yx-dc02" and 20 <= i < 50]
    assert [i for i, key in keys if key == "du-yx-dc01" and 20 <= i < 50]
    assert [i for i, key in keys if key == "du-yx-dc02" and i >= 50]


def test_slow_sensors_hold_still(reg):
    """A tailings pond sampled every 30 s: no drift and little noise over an hour (its rate rule is 0.1 m/h)."""
    got = readings(run(PlantSimulator(reg, seed=2, start_ms=START_MS, sites=["mn-jn-tailings01"]), 3600))
    t, v = zip(*got["mn-jn-tailings01-pond-level01"], strict=False)
    assert abs(np.polyfit(np.array(t) / 3600, v, 1)[0]) < 0.02  # m/h
    assert 0 < np.std(v) < 0.02


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (Scenario("stuck", "hz-zjg-tank01", 0, 10), "sensor_id is required"),
        (Scenario("rate", "hz-zjg-tank01", 0, 10, sensor_id="hz-zjg-tank01-t101-temp01"), "slope_per_min"),
        (Scenario("flap", "hz-zjg-tank01", 0, 10, sensor_id="hz-zjg-tank01-t101-gas01", flap_s=(0, 1)), "flap_s"),
        (Scenario("stuck", "hz-zjg-tank01", 0, 10, sensor_id="hz-zjg-tank01-t101-inlet-esv01"), "state signal"),
        (Scenario("interlock", "hz-zjg-jetty01", 0, 10, sensor_id="hz-zjg-jetty01-b1-gas01"), "no state signal"),
        (
            Scenario(
                "interlock",
                "hz-zjg-tank01",
                0,
                10,
                sensor_id="hz-zjg-tank01-t101-level01",
                response_id="hz-zjg-tank01-t101-gas01",
            ),
            "not a state signal",
        ),
    ],
)
def test_bad_sensor_scenarios_are_refused(reg, scenario, message):
    with pytest.raises(ValueError, match=message):
        PlantSimulator(reg, start_ms=START_MS, scenarios=[scenario])
