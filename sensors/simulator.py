"""A deterministic plant simulator: realistic telemetry for every registered sensor, plus scripted faults.

Each sensor reads baseline + slow bounded drift + Gaussian noise (slowly sampled ones: noise
only) and never alarms by itself; state signals (unit bool) read a clean 0 or 1. Scenarios add
a leak, a silent sensor or site, a burst of malformed messages, or one misbehaving sensor: a
fast ramp, a frozen value, a value past its measuring range, a value flapping across its set
point, an excursion past its set points, or an interlock trigger whose response signal acts
(or does not). The same seed gives the same bytes, and a site's signals do not depend on which
other sites are simulated.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import orjson

from config.topics import telemetry_topic
from sensors.registry import Registry, Sensor, Site
from sensors.schema import Frame, FrameReading, Quality, Reading, encode

NOISE_FRACTION = 0.0075  # noise sigma as a fraction of the measuring span
DRIFT_FRACTION = 0.02  # largest drift amplitude as a fraction of the span
DRIFT_PERIOD_S = (600.0, 3600.0)  # lively, for demos and scenarios; plants drift over hours (see drift_period_s)
# Sensors sampled this slowly or slower (tailings ponds, slopes: 30-60 s) watch processes that
# move over days; over the minutes to hours a run covers, a healthy pond or dam holds still. Such
# a sensor gets no drift and a precise instrument's noise, or its rate rules (0.1 m/h of pond
# level, mm/d of dam movement) would fire on a healthy signal.
SLOW_PERIOD_S = 30.0
SLOW_NOISE_FRACTION = 0.0005
LEAK_RAMP_S = 20.0  # time for the gas to climb from normal to its peak
LEAK_GAS_OVERSHOOT = 1.2  # gas peaks at 1.2 x its top set point: 60 %LEL for L2 = 50
LEAK_TEMP_RISE = 15.0  # °C
TRIGGER_RAMP_S = 20.0  # an excursion (or interlock trigger) climbs to its peak over this long
RATE_CAP_SIGMAS = 4.0  # a ramp levels off this many noise sigmas inside the healthy band
OUT_OF_RANGE_FRACTION = 0.1  # out_of_range reads this fraction of the span past the top of the range
GAS_QUANTITY = "combustible_gas"
# Zero drift (`zero_drift=True`): a gas detector in clean air reads its zero point plus an offset
# that wanders a few tenths of a percent of span either side of 0 (below the measuring range
# is still a measurement under NAMUR NE 43, down to 1.25 % of span), with an instrument's noise.
GAS_DETECTOR_UNITS = ("%LEL", "ppm")
ZERO_OFFSET_FRACTION = (-0.006, 0.003)
ZERO_NOISE_FRACTION = 0.001
NE43_BAND_BELOW = 0.0125
TEMP_QUANTITY = "temperature"
# Cycled through, one per frame of a site inside a malformed window:
#   not_json      - the site's frame cut in half (sent in addition to the good frame)
#   string_value  - the site's frame with one reading's value as a JSON string (replaces the frame)
#   nan_string    - a single reading whose value is the JSON string "NaN" (in addition)
#   missing_field - a single reading without `ts` (in addition)
MALFORMED_KINDS = ("not_json", "string_value", "nan_string", "missing_field")


ScenarioKind = Literal["leak", "silent", "malformed", "rate", "stuck", "out_of_range", "flap", "excursion", "interlock"]
# Kinds that script one measuring sensor: `sensor_id` is required.
SENSOR_KINDS = ("rate", "stuck", "out_of_range", "flap", "excursion", "interlock")


@dataclass
class Scenario:
    """A scripted fault on one site; times are seconds since the simulation started.

    leak: gas and tank temperature of `area` rise past their set points and recover, all
    inside [start_s, start_s + duration_s). silent: `sensor_id` (or every sensor of `area`,
    or of the site) sends nothing in the window. malformed: the site emits bad messages.
    The kinds below script the measuring sensor `sensor_id`, in the window:
    rate: ramps at `slope_per_min` (units per minute, negative falls) and levels off inside
    its healthy band, so no set point is crossed. stuck: repeats one exact value.
    out_of_range: reads past the top of its measuring range, with `quality`.
    flap: `flap_s[0]` s past its first set point, `flap_s[1]` s back at its healthy value, over and over.
    excursion: climbs (falls, for a sensor with only low set points) past its last set point
    over TRIGGER_RAMP_S, holds, and comes back, all inside the window.
    interlock: an excursion; when `respond`, the response state signals (`response_id`, else
    every state signal of `area`, else of the sensor's own area) leave their normal state
    `respond_after_s` after the last set point is crossed, until the window ends.
    """

    kind: ScenarioKind
    site_id: str
    start_s: float
    duration_s: float
    area: str | None = None
    sensor_id: str | None = None
    slope_per_min: float | None = None
    quality: Quality = "good"
    flap_s: tuple[float, float] = (1.0, 1.0)
    respond: bool = True
    respond_after_s: float = 5.0
    response_id: str | None = None

    def active(self, t: float) -> bool:
        """True while `t` is inside the window."""
        return self.start_s <= t < self.start_s + self.duration_s


@dataclass
class _Channel:
    """One sensor's signal parameters and sampling state."""

    sensor: Sensor
    baseline: float
    sigma: float
    drift_amp: float
    drift_omega: float
    drift_phase: float
    band: tuple[float, float]  # a healthy signal is clipped into this, strictly inside the set points
    decimals: int
    next_due: float = 0.0
    seq: int = 0


@dataclass
class _SiteState:
    site: Site
    topic: str
    channels: list[_Channel]
    rng: np.random.Generator
    malformed_count: int = 0


@dataclass
class _Message:
    """One outgoing message before encoding: a Frame, a JSON-able dict, or raw bytes."""

    topic: str
    site_id: str
    body: Frame | dict | bytes


class PlantSimulator:
    """Ticks through time, emitting one frame per site whose sensors are due."""

    def __init__(
        self,
        registry: Registry,
        *,
        seed: int = 0,
        start_ms: int,
        tick_s: float = 1.0,
        scenarios: list[Scenario] | tuple[Scenario, ...] = (),
        sites: list[str] | None = None,
        zero_drift: bool = False,
        drift_period_s: tuple[float, float] = DRIFT_PERIOD_S,
    ):
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        site_ids = list(registry.sites) if sites is None else list(sites)
        unknown = [s for s in site_ids if s not in registry.sites]
        if unknown:
            raise ValueError(f"unknown site ids: {', '.join(unknown)}")
        self.registry = registry
        self.start_ms = start_ms
        self.tick_s = tick_s
        self.ticks = 0
        self.scenarios = list(scenarios)
        self._sites = [_site_state(registry, registry.sites[s], seed, zero_drift, drift_period_s) for s in site_ids]
        for sc in self.scenarios:
            _check_scenario(sc, registry, site_ids)

    @property
    def t_s(self) -> float:
        """Seconds since start of the next tick."""
        return self.ticks * self.tick_s

    def tick(self) -> list[tuple[str, str, bytes]]:
        """Advance one tick; (topic, site_id key, message bytes) for every message of this tick."""
        return [(m.topic, m.site_id, _encode_body(m.body)) for m in self._step()]

    def readings_jsonl(self, n_ticks: int) -> Iterator[str]:
        """The next `n_ticks` of the same stream, one Reading JSON per line (no trailing newline).

        Frames are flattened into readings; malformed messages are written as they are (the
        cut frame as its raw text), so a replay file exercises the dead-letter path too.
        """
        for _ in range(n_ticks):
            for msg in self._step():
                yield from _flatten(msg.body)

    def _step(self) -> list[_Message]:
        t = self.t_s
        ts = self.start_ms + round(t * 1000)
        active = [sc for sc in self.scenarios if sc.active(t)]
        out: list[_Message] = []
        for state in self._sites:
            out += _site_messages(state, t, ts, [sc for sc in active if sc.site_id == state.site.id])
        self.ticks += 1
        return out


def default_demo_scenarios(
    registry: Registry, start_s: float, *, leak_s: float = 60.0, silent_s: float = 90.0, malformed_s: float = 8.0
) -> list[Scenario]:
    """The demo's script: a leak at the hazchem tank area, one silent gas detector, one malformed burst."""
    leak_site, leak_area = demo_leak_target(registry)
    silent_site = registry.sites_by_sector("ammonia")[0]
    malformed_site = registry.sites_by_sector("casting")[0]
    return [
        Scenario("leak", leak_site, start_s, leak_s, area=leak_area),
        Scenario("silent", silent_site.id, start_s + 10, silent_s, sensor_id=silent_site.sensor_ids[0]),
        Scenario("malformed", malformed_site.id, start_s + 5, malformed_s),
    ]


def demo_leak_target(registry: Registry) -> tuple[str, str]:
    """(site_id, area) of the first hazchem tank area holding both a combustible gas and a temperature sensor."""
    for site in registry.sites_by_sector("hazchem"):
        if site.kind != "tank_area":
            continue
        for area in dict.fromkeys(s.area for s in registry.sensors_of_site(site.id)):
            gas, temp = leak_sensor_ids(registry, site.id, area)
            if gas and temp:
                return site.id, area
    raise ValueError("no hazchem tank_area site has a combustible gas and a temperature sensor in one area")


def leak_sensor_ids(registry: Registry, site_id: str, area: str) -> tuple[list[str], list[str]]:
    """The combustible gas and the temperature sensors a leak in `area` drives."""
    sensors = [s for s in registry.sensors_of_site(site_id) if s.area == area]
    return [s.id for s in sensors if s.quantity == GAS_QUANTITY], [s.id for s in sensors if s.quantity == TEMP_QUANTITY]


# --- signals -----------------------------------------------------------------------------


def default_baseline(sensor: Sensor) -> float:
    """`normal` if given, else a value well inside the non-alarm band (0 for a state signal)."""
    if sensor.normal is not None:
        return sensor.normal
    if sensor.is_state:
        return 0.0  # the registry's convention: 0 = fan not running, valve not closed / not open
    lo, hi = sensor.range
    a = sensor.alarms
    low = a.low if a.low is not None else a.low_low
    high = a.high if a.high is not None else a.high_high
    if low is not None and high is not None:
        return (low + high) / 2
    if high is not None:
        return lo + 0.2 * (high - lo)  # gas-like: sits near the bottom of its range
    return low + 0.5 * (hi - low)  # type: ignore[operator]  # Alarms guarantees one set point


def _is_gas_detector(sensor: Sensor) -> bool:
    lows = [k for k in sensor.alarms.set_points() if k.startswith("low")]
    return sensor.unit in GAS_DETECTOR_UNITS and sensor.range[0] == 0 and not lows


def _channel(
    sensor: Sensor,
    rng: np.random.Generator,
    zero_drift: bool = False,
    drift_period_s: tuple[float, float] = DRIFT_PERIOD_S,
) -> _Channel:
    """Signal parameters sized so noise and drift stay well clear of every set point."""
    if sensor.is_state:
        return _state_channel(sensor)
    if zero_drift and _is_gas_detector(sensor):
        return _zero_channel(sensor, rng)
    lo, hi = sensor.range
    span = hi - lo
    base = default_baseline(sensor)
    points = sensor.alarms.set_points()
    margin = min(abs(v - base) for v in points.values())
    highs = [v for k, v in points.items() if k.startswith("high")]
    lows = [v for k, v in points.items() if k.startswith("low")]
    # drift + 6 sigma stays under 0.9 x margin; the band clip makes "never" certain.
    band_lo = max([lo] + [v + 0.05 * (base - v) for v in lows])
    band_hi = min([hi] + [v - 0.05 * (v - base) for v in highs])
    slow = sensor.period_s >= SLOW_PERIOD_S
    return _Channel(
        sensor=sensor,
        baseline=base,
        sigma=SLOW_NOISE_FRACTION * span if slow else min(NOISE_FRACTION * span, 0.1 * margin),
        drift_amp=0.0 if slow else min(DRIFT_FRACTION * span, 0.3 * margin),
        # drawn even when unused, so every later channel of the site keeps its random numbers
        drift_omega=2 * math.pi / rng.uniform(*drift_period_s),
        drift_phase=rng.uniform(0, 2 * math.pi),
        band=(band_lo, band_hi),
        decimals=max(1, 4 - math.ceil(math.log10(span))),
    )


def _zero_channel(sensor: Sensor, rng: np.random.Generator) -> _Channel:
    """A gas detector in clean air: its zero point, offset a little either side, and small noise."""
    lo, hi = sensor.range
    span = hi - lo
    first = min(sensor.alarms.set_points().values())
    return _Channel(
        sensor=sensor,
        baseline=lo + rng.uniform(*ZERO_OFFSET_FRACTION) * span,
        sigma=ZERO_NOISE_FRACTION * span,
        drift_amp=0.0,
        drift_omega=0.0,
        drift_phase=0.0,
        band=(lo - NE43_BAND_BELOW * span, lo + 0.2 * (first - lo)),
        decimals=max(1, 4 - math.ceil(math.log10(span))),
    )


def _state_channel(sensor: Sensor) -> _Channel:
    """A state signal: exactly its normal state, no drift, no noise.

    It draws no random numbers, so adding one to a site leaves that site's measured signals as they were.
    """
    base = default_baseline(sensor)
    return _Channel(
        sensor=sensor,
        baseline=base,
        sigma=0.0,
        drift_amp=0.0,
        drift_omega=0.0,
        drift_phase=0.0,
        band=(base, base),
        decimals=0,
    )


def _site_state(
    registry: Registry,
    site: Site,
    seed: int,
    zero_drift: bool = False,
    drift_period_s: tuple[float, float] = DRIFT_PERIOD_S,
) -> _SiteState:
    # Seeded per site, so a site's signals do not change when other sites are added or left out.
    rng = np.random.default_rng([seed, zlib.crc32(site.id.encode())])
    channels = [_channel(s, rng, zero_drift, drift_period_s) for s in registry.sensors_of_site(site.id)]
    return _SiteState(site=site, topic=telemetry_topic(site.sector), channels=channels, rng=rng)


def _trapezoid(t: float, start: float, duration: float, ramp: float) -> float:
    """0 → 1 over `ramp`, hold, 1 → 0 over `ramp`, ending exactly at start + duration."""
    ramp = min(ramp, duration / 3)
    x = t - start
    if x < 0 or x >= duration:
        return 0.0
    return min(1.0, x / ramp, (duration - x) / ramp)


def _leak_peak(ch: _Channel) -> float:
    """Where a leak takes this channel: gas past L2, temperature ~15 °C up and past its high set point."""
    s = ch.sensor
    top = max(s.alarms.set_points().values())
    if s.quantity == GAS_QUANTITY:
        return min(s.range[1], LEAK_GAS_OVERSHOOT * top)
    high = s.alarms.high if s.alarms.high is not None else top
    # At least 3 °C past the high set point, so noise at the peak does not dip back under it.
    return min(s.range[1], ch.baseline + max(LEAK_TEMP_RISE, high - ch.baseline + 3.0))


def _level(ch: _Channel, t: float) -> float:
    """The healthy signal without noise: baseline plus drift."""
    return ch.baseline + ch.drift_amp * math.sin(ch.drift_omega * t + ch.drift_phase)


def _value(ch: _Channel, t: float, noise: float, scenarios: list[Scenario]) -> float:
    """One sample: healthy signal, plus any leak, then any scenario scripting this very sensor."""
    level = _level(ch, t)
    wobble = ch.sigma * noise
    v = min(max(level + wobble, ch.band[0]), ch.band[1])
    s = ch.sensor
    for sc in scenarios:
        if sc.kind == "leak" and s.area == sc.area and s.quantity in (GAS_QUANTITY, TEMP_QUANTITY):
            # Measured from the drifted level, so the peak is reached whatever the drift; noise stays.
            v += _trapezoid(t, sc.start_s, sc.duration_s, LEAK_RAMP_S) * (_leak_peak(ch) - level)
        elif sc.kind in SENSOR_KINDS and sc.sensor_id == s.id:
            if sc.kind == "out_of_range":
                # Past the measuring range on purpose: the clip below would hide the fault.
                return round(s.range[1] + OUT_OF_RANGE_FRACTION * (s.range[1] - s.range[0]), ch.decimals)
            v = _scripted(ch, sc, t, level, wobble, v)
    # Clipped to the measuring range, or to the band below it that a zero-drifting detector reads.
    return round(min(max(v, min(s.range[0], ch.band[0])), s.range[1]), ch.decimals)


def _scripted(ch: _Channel, sc: Scenario, t: float, level: float, wobble: float, v: float) -> float:
    """The value a sensor-scripting scenario gives this sample (`v` is the healthy one)."""
    if sc.kind == "rate":
        return _ramp(ch, sc, t, level, wobble)
    if sc.kind == "stuck":
        # The noise-free value at the start of the window: the same float every sample.
        return min(max(_level(ch, sc.start_s), ch.band[0]), ch.band[1])
    if sc.kind == "flap":
        above = (t - sc.start_s) % sum(sc.flap_s) < sc.flap_s[0]
        return _flap_value(ch) + wobble if above else v
    # excursion or interlock trigger: a trapezoid like a leak, measured from the drifted level
    return v + _trapezoid(t, sc.start_s, sc.duration_s, TRIGGER_RAMP_S) * (_trigger_peak(ch) - level)


def _ramp(ch: _Channel, sc: Scenario, t: float, level: float, wobble: float) -> float:
    """Healthy level + slope × elapsed, levelled off inside the healthy band so no set point is crossed.

    The cap sits a few noise sigmas inside the band: clipped samples would repeat one value and look stuck.
    """
    slope = sc.slope_per_min or 0.0
    ramped = level + slope * (t - sc.start_s) / 60.0
    if slope > 0:
        ramped = min(ramped, ch.band[1] - RATE_CAP_SIGMAS * ch.sigma)
    else:
        ramped = max(ramped, ch.band[0] + RATE_CAP_SIGMAS * ch.sigma)
    return min(max(ramped + wobble, ch.band[0]), ch.band[1])


def _direction(sensor: Sensor) -> int:
    """+1 when the sensor alarms high (it has a high set point), else -1: which way scenarios push it."""
    return 1 if any(k.startswith("high") for k in sensor.alarms.set_points()) else -1


def _set_points_one_way(sensor: Sensor) -> list[float]:
    """The set points in the direction the sensor is pushed, mildest first."""
    up = _direction(sensor) > 0
    points = [v for k, v in sensor.alarms.set_points().items() if k.startswith("high" if up else "low")]
    return sorted(points, reverse=not up)


def _flap_value(ch: _Channel) -> float:
    """A quarter of the way from the first set point to the next one (or to the range end): past the
    first set point only, so just the first level flaps."""
    s = ch.sensor
    points = _set_points_one_way(s)
    end = s.range[1] if _direction(s) > 0 else s.range[0]
    nxt = points[1] if len(points) > 1 else end
    return points[0] + 0.25 * (nxt - points[0])


def _trigger_peak(ch: _Channel) -> float:
    """Halfway from the last set point to the range end: far enough that noise never dips back."""
    s = ch.sensor
    end = s.range[1] if _direction(s) > 0 else s.range[0]
    return (_set_points_one_way(s)[-1] + end) / 2


def _crossing_s(ch: _Channel, sc: Scenario) -> float:
    """When the trigger's noise-free ramp passes its last set point, seconds since the simulation started."""
    ramp = min(TRIGGER_RAMP_S, sc.duration_s / 3)
    frac = (_set_points_one_way(ch.sensor)[-1] - ch.baseline) / (_trigger_peak(ch) - ch.baseline)
    return sc.start_s + frac * ramp


def _responses(state: _SiteState, scenarios: list[Scenario], t: float) -> dict[str, float]:
    """State signals an interlock has already moved out of their normal state: sensor id → value."""
    out: dict[str, float] = {}
    for sc in scenarios:
        if sc.kind != "interlock" or not sc.respond:
            continue
        trigger = next(ch for ch in state.channels if ch.sensor.id == sc.sensor_id)
        if t < _crossing_s(trigger, sc) + sc.respond_after_s:
            continue
        for sid in _response_ids(sc, [ch.sensor for ch in state.channels]):
            ch = next(c for c in state.channels if c.sensor.id == sid)
            out[sid] = 1.0 - ch.baseline
    return out


def _response_ids(sc: Scenario, sensors: list[Sensor]) -> list[str]:
    """The state signals an interlock moves: `response_id`, else those of `area`, else of the trigger's area."""
    if sc.response_id is not None:
        return [sc.response_id]
    area = sc.area or next(s.area for s in sensors if s.id == sc.sensor_id)
    return [s.id for s in sensors if s.is_state and s.area == area]


def _quality(ch: _Channel, scenarios: list[Scenario]) -> Quality:
    """`bad` only where an out_of_range scenario asks for it."""
    return next((sc.quality for sc in scenarios if sc.kind == "out_of_range" and sc.sensor_id == ch.sensor.id), "good")


def _silenced(ch: _Channel, scenarios: list[Scenario]) -> bool:
    s = ch.sensor
    return any(
        sc.kind == "silent" and (sc.sensor_id == s.id or (sc.sensor_id is None and sc.area in (None, s.area)))
        for sc in scenarios
    )


def _site_messages(state: _SiteState, t: float, ts: int, scenarios: list[Scenario]) -> list[_Message]:
    """This tick's messages of one site: its frame (if any sensor is due) and any malformed ones."""
    eps = 1e-9
    due = [ch for ch in state.channels if ch.next_due <= t + eps]
    if not due:
        return []
    for ch in due:
        while ch.next_due <= t + eps:  # a period shorter than the tick still samples once a tick
            ch.next_due += ch.sensor.period_s
    # Noise is drawn for every due measuring sensor, silent or not, so a scenario never shifts
    # the random stream of the sensors it does not touch. State signals have no noise.
    noisy = [ch for ch in due if not ch.sensor.is_state]
    noise = dict(zip((ch.sensor.id for ch in noisy), state.rng.standard_normal(len(noisy)).tolist(), strict=False))
    moved = _responses(state, scenarios, t)
    readings = []
    for ch in due:
        value = moved.get(ch.sensor.id, _value(ch, t, noise.get(ch.sensor.id, 0.0), scenarios))
        ch.seq += 1  # counts samples: a silent sensor's seq jumps when it comes back
        if not _silenced(ch, scenarios):
            readings.append(
                FrameReading(sensor_id=ch.sensor.id, value=value, quality=_quality(ch, scenarios), seq=ch.seq)
            )
    site_id = state.site.id
    frame = Frame(site_id=site_id, ts=ts, gateway=f"{site_id}-gw", readings=readings) if readings else None
    bad = next((sc for sc in scenarios if sc.kind == "malformed"), None)
    if bad is None or frame is None:
        return [_Message(state.topic, site_id, frame)] if frame else []
    kind = MALFORMED_KINDS[state.malformed_count % len(MALFORMED_KINDS)]
    state.malformed_count += 1
    return [_Message(state.topic, site_id, b) for b in _malformed(kind, frame, bad.sensor_id)]


def _malformed(kind: str, frame: Frame, sensor_id: str | None) -> list[Frame | dict | bytes]:
    """The good frame and/or one bad message of `kind` (see MALFORMED_KINDS)."""
    target = next((r for r in frame.readings if r.sensor_id == sensor_id), frame.readings[0])
    if kind == "not_json":
        raw = encode(frame)
        return [frame, raw[: len(raw) // 2]]
    if kind == "string_value":
        obj = frame.model_dump(exclude_none=True)
        for r in obj["readings"]:
            if r["sensor_id"] == target.sensor_id:
                r["value"] = str(r["value"])
        return [obj]
    single = {"site_id": frame.site_id, "sensor_id": target.sensor_id, "ts": frame.ts, "value": target.value}
    if kind == "nan_string":
        return [frame, {**single, "value": "NaN"}]
    del single["ts"]
    return [frame, single]


def _encode_body(body: Frame | dict | bytes) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, dict):
        return orjson.dumps(body)
    return encode(body)


def _flatten(body: Frame | dict | bytes) -> Iterator[str]:
    """One JSON line per reading of a message; a non-JSON message as its raw text."""
    if isinstance(body, bytes):
        yield body.decode("utf-8", errors="replace")
    elif isinstance(body, Frame):
        for r in body.readings:
            yield encode(Reading(site_id=body.site_id, ts=body.ts, **r.model_dump())).decode()
    elif "readings" in body:
        head = {"site_id": body["site_id"], "ts": body["ts"]}
        for r in body["readings"]:
            yield orjson.dumps({**head, **r}).decode()
    else:
        yield orjson.dumps(body).decode()


def _check_scenario(sc: Scenario, registry: Registry, site_ids: list[str]) -> None:
    """Reject a scenario that could never fire, naming why."""
    if sc.site_id not in site_ids:
        raise ValueError(f"scenario {sc.kind}: site {sc.site_id!r} is not simulated")
    if sc.duration_s <= 0:
        raise ValueError(f"scenario {sc.kind} on {sc.site_id}: duration_s must be > 0")
    site_sensors = {s.id: s for s in registry.sensors_of_site(sc.site_id)}
    if sc.sensor_id is not None and sc.sensor_id not in site_sensors:
        raise ValueError(f"scenario {sc.kind}: sensor {sc.sensor_id!r} is not on site {sc.site_id}")
    if sc.area is not None and all(s.area != sc.area for s in site_sensors.values()):
        raise ValueError(f"scenario {sc.kind}: no sensor of site {sc.site_id} is in area {sc.area!r}")
    if sc.kind == "leak":
        if sc.area is None:
            raise ValueError(f"leak scenario on {sc.site_id}: area is required")
        gas, _ = leak_sensor_ids(registry, sc.site_id, sc.area)
        if not gas:
            raise ValueError(f"leak scenario: area {sc.area!r} of {sc.site_id} has no {GAS_QUANTITY} sensor")
    if sc.kind in SENSOR_KINDS:
        _check_sensor_scenario(sc, site_sensors)


def _check_sensor_scenario(sc: Scenario, site_sensors: dict[str, Sensor]) -> None:
    """The checks of the kinds that script one measuring sensor."""
    if sc.sensor_id is None:
        raise ValueError(f"{sc.kind} scenario on {sc.site_id}: sensor_id is required")
    if site_sensors[sc.sensor_id].is_state:
        raise ValueError(f"{sc.kind} scenario: {sc.sensor_id} is a state signal; script a measuring sensor")
    if sc.kind == "rate" and not sc.slope_per_min:
        raise ValueError(f"rate scenario on {sc.sensor_id}: slope_per_min is required and not 0")
    if sc.kind == "flap" and min(sc.flap_s) <= 0:
        raise ValueError(f"flap scenario on {sc.sensor_id}: both flap_s durations must be > 0")
    if sc.kind == "interlock":
        response = site_sensors.get(sc.response_id) if sc.response_id is not None else None
        if sc.response_id is not None and not (response and response.is_state):
            raise ValueError(f"interlock scenario: response {sc.response_id!r} is not a state signal of {sc.site_id}")
        if not _response_ids(sc, list(site_sensors.values())):
            raise ValueError(f"interlock scenario on {sc.sensor_id}: no state signal to respond in its area")
