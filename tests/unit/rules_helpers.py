"""Feed readings to an engine the way the worker does: a list of frames per batch."""

from __future__ import annotations

from rules.engine import BatchResult, RuleEngine
from sensors.schema import Frame, Reading

T0 = 1_764_000_000_000


def frame(site: str, t_s: float, **values: float) -> Frame:
    """A frame at T0 + t_s seconds; keyword names are sensor ids with '-' written as '_'."""
    return Frame(
        site_id=site,
        ts=T0 + int(t_s * 1000),
        readings=[{"sensor_id": k.replace("_", "-"), "value": v} for k, v in values.items()],
    )


def run(engine: RuleEngine, *messages: Frame | Reading) -> BatchResult:
    """One batch through the engine."""
    b = engine.new_batch()
    for m in messages:
        b.add(m)
    assert not b.rejects, b.rejects
    return engine.process(b.build())


def series(
    engine: RuleEngine, site: str, sensor: str, values: list[float], *, step_s: float = 1.0, batch: int = 7
) -> list:
    """A value series for one sensor, fed in batches of `batch` frames; returns all hazard events."""
    events = []
    frames = [
        Frame(site_id=site, ts=T0 + int(i * step_s * 1000), readings=[{"sensor_id": sensor, "value": v}])
        for i, v in enumerate(values)
    ]
    for i in range(0, len(frames), batch):
        events.extend(run(engine, *frames[i : i + batch]).hazards)
    return events
