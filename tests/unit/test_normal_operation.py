"""Six hours of ordinary operation of about 1,000 sensors raise nothing: no process hazard, no
instrument hazard, no incident. The signals have noise and slow drift, and the gas detectors sit
at their zero point with the offset real ones have (a few tenths of a percent of span either side
of 0, so some readings are below the measuring range): a duty room must not hear of any of it.

Process variables drift over hours here (periods of 2–8 h, as a tank's temperature follows the
day), not the simulator's default of 10–60 minutes, which is lively on purpose for demos: a 2 °C
swing every ten minutes is what the tank-temperature rate rule is there to catch.

The input is made here, deterministically (seed, registry, catalogue), not committed: six hours
of 1,000 sensors is millions of readings.
"""

from __future__ import annotations

from collections import Counter

from config.settings import get_settings
from rules.catalog import load_catalog
from rules.engine import RuleEngine
from safewatch.rules_bench import scaled_registry
from sensors.schema import decode_fast
from sensors.simulator import PlantSimulator

from .rules_helpers import T0

HOURS = 6
BATCH_S = 60  # one engine batch per simulated minute, the clock advanced after each, as in replay


def test_six_hours_of_normal_operation_of_1000_sensors_raise_nothing():
    registry = scaled_registry(get_settings().registry, sensors=1_100)
    assert len(registry.sensors) >= 1_000
    sim = PlantSimulator(registry, seed=2026, start_ms=T0, zero_drift=True, drift_period_s=(2 * 3600.0, 8 * 3600.0))
    engine = RuleEngine(registry, load_catalog())
    hazards: Counter[str] = Counter()
    incidents = readings = below_zero = 0
    for _ in range(HOURS * 3600 // BATCH_S):
        builder = engine.new_batch()
        for _ in range(BATCH_S):
            for _topic, _key, raw in sim.tick():
                msg = decode_fast(raw)
                assert msg is not None, raw  # the simulator's messages are all valid
                builder.add(msg)
                below_zero += sum(1 for r in msg.readings if r.value < 0)  # type: ignore[union-attr]
        assert not builder.rejects
        batch = builder.build()
        readings += len(batch)
        for result in (engine.process(batch), engine.advance(int(batch.ts.max()))):
            hazards.update(f"{h.kind} {h.rule_id}" for h in result.hazards)
            incidents += len(result.incidents)
    print(f"\n{len(registry.sensors)} sensors, {readings:,} readings, {below_zero:,} below 0")
    assert readings > 9_000_000
    assert below_zero > 10_000  # the zero drift is really there
    assert hazards == Counter() and incidents == 0, (hazards.most_common(10), incidents)
