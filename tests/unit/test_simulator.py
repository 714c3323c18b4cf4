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
    sim = PlantSimulator(reg, seed=0, start_ms=START_MS, scenarios=[Scenario("silent", "am-qd-mr01", 20, 30, sensor_id=sensor)])
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
    sim = PlantSimulator(reg, seed=0, start_ms=START_MS, sites=["ca-jy-pit01"],
                         scenarios=[Scenario("malformed", "ca-jy-pit01", 0, len(MALFORMED_KINDS))])
    bad = [line for line in sim.readings_jsonl(len(MALFORMED_KINDS)) if decode_error(line.encode())]
    assert len(bad) == len(MALFORMED_KINDS)


def test_default_demo_scenarios(reg):
    scenarios = default_demo_scenarios(reg, 10.0)
    assert [s.kind for s in scenarios] == ["leak", "silent", "malformed"]
    leak = scenarios[0]
    assert (leak.site_id, leak.area) == demo_leak_target(reg) and leak.start_s == 10.0
    assert scenarios[1].sensor_id in reg.sites[scenarios[1].site_id].sensor_ids
    PlantSimulator(reg, start_ms=START_MS, scenarios=scenarios)  # all valid


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
