"""`safewatch replay`: the rule engine over a recorded JSONL file, no broker needed.

Readings (or frames) are put in event-time order — a stable sort, so equal times keep file
order — and fed to the engine in batches; after each batch the clock advances to its newest
reading, so timer rules (offline, interlock deadlines) fire as they would live. Hazard,
incident and notice events come out as JSON lines; the same input always gives the same output.
With correlation rules, the scope stage (rules/scope.py) runs after stage 1 over its events in
their order, as the worker's repartition feeds it: scope incidents come out as `incident` lines
(`scope` other than "site") and enterprise risk changes as `risk` lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from sensors.registry import Registry
from sensors.schema import DecodeError, Frame, Reading, decode_message, split_frame

from .catalog import Catalog
from .engine import RuleEngine
from .models import HazardEvent, IncidentEvent
from .patterns import CorrelationRule
from .publish import MaintenanceWindow
from .risk import advance_with_risk, feed_with_risk
from .scope import STAGE2_SCOPES, ScopeEngine, rules_scopes, scope_records


@dataclass
class ReplayReport:
    """Counts of one replay run; `errors` name the input line of each refused message."""

    readings: int = 0
    hazards: int = 0
    incidents: int = 0
    notices: int = 0
    scope_incidents: int = 0
    risks: int = 0
    refused: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def read_messages(path: Path, report: ReplayReport) -> list[tuple[int, Frame | Reading]]:
    """Decode every line into (line number, message) in event-time order; bad lines are reported, not fatal.
    A frame with some bad readings keeps its good ones, as in the worker."""
    messages: list[tuple[int, Frame | Reading]] = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                messages.append((lineno, decode_message(line)))
            except DecodeError as exc:
                frame, bad = _salvage(line, exc)
                if frame is None and not bad:
                    report.refused[exc.reason] += 1
                    report.errors.append(f"{path}:{lineno}: {exc}")
                for _, detail in bad:
                    report.refused["invalid_field"] += 1
                    report.errors.append(f"{path}:{lineno}: invalid_field: {detail}")
                if frame is not None:
                    messages.append((lineno, frame))
    messages.sort(key=lambda m: m[1].ts)
    return messages


def _salvage(line: bytes, exc: DecodeError) -> tuple[Frame | None, list[tuple[dict, str]]]:
    """A frame with bad readings: its good ones, and the bad ones with why (the worker's rule)."""
    if exc.reason != "invalid_field":
        return None, []
    obj = orjson.loads(line)
    if not isinstance(obj.get("readings"), list):
        return None, []
    return split_frame(obj)


def replay_messages(
    messages: Iterable[tuple[int, Frame | Reading]],
    engine: RuleEngine,
    report: ReplayReport,
    batch_size: int = 1000,
    *,
    source: Path | str = "<input>",
    stage2: Stage2 | None = None,
) -> Iterator[dict]:
    """Feed (line, message) pairs through the engine in batches; yields hazard, incident and notice events as dicts.

    A reading the engine refuses (unknown sensor, another site's sensor, late) is reported as
    SOURCE:LINE: reason, like a line that does not decode.
    """
    chunk: list[tuple[int, Frame | Reading]] = []

    def flush() -> Iterator[dict]:
        builder = engine.new_batch()
        for lineno, m in chunk:
            builder.add(m, origin=lineno)
        for r in builder.rejects:
            report.refused[r.reason] += 1
            report.errors.append(f"{source}:{r.origin}: {r.reason}: {r.detail}")
        batch = builder.build()
        report.readings += len(batch)
        result = engine.process(batch)
        for pos in result.late:
            sensor = engine.sensor_ids[batch.idx[pos]]
            report.refused["late"] += 1
            report.errors.append(
                f"{source}:{batch.origin[pos]}: late: sensor_id {sensor!r} at ts {int(batch.ts[pos])} is more than "
                f"{engine.lateness_ms / 1000:g} s behind that sensor's newest reading"
            )
        # The clock follows the data: timers (offline, interlock deadlines) fire up to the newest reading.
        timers = engine.advance(int(batch.ts.max())) if len(batch) else None
        for res in (result, timers):
            if res is None:
                continue
            report.hazards += len(res.hazards)
            report.incidents += len(res.incidents)
            report.notices += len(res.notices)
            for ev in res.events:
                yield {"type": _type(ev), **ev.model_dump()}
                if stage2 is not None:
                    yield from stage2.feed(ev, report)
        if stage2 is not None and len(batch):
            yield from stage2.advance(int(batch.ts.max()), report)
        chunk.clear()

    for m in messages:
        chunk.append(m)
        if len(chunk) >= batch_size:
            yield from flush()
    if chunk:
        yield from flush()


def _type(ev: object) -> str:
    return "hazard" if isinstance(ev, HazardEvent) else "incident" if isinstance(ev, IncidentEvent) else "notice"


class Stage2:
    """The scope stage over stage 1's events, as `safewatch worker` runs it behind the repartition topic."""

    def __init__(self, rules: list[CorrelationRule], classes: dict[str, str] | None, quiet_ms: int, window_ms: int):
        self.engine = ScopeEngine(rules, quiet_ms=quiet_ms, default_window_ms=window_ms)
        self.classes = classes
        used = set(rules_scopes(rules)) | ({"enterprise"} if classes is not None else set())
        self.scopes = [s for s in STAGE2_SCOPES if s in used]

    def feed(self, ev, report: ReplayReport) -> Iterator[dict]:
        for rec in scope_records(ev, self.scopes):
            incidents, risk = feed_with_risk(self.engine, rec, self.classes)
            yield from self._out(incidents, [risk] if risk else [], report)

    def advance(self, now: int, report: ReplayReport) -> Iterator[dict]:
        incidents, risks = advance_with_risk(self.engine, now, None, self.classes)
        yield from self._out(incidents, risks, report)

    def _out(self, incidents, risks, report: ReplayReport) -> Iterator[dict]:
        report.scope_incidents += len(incidents)
        report.risks += len(risks)
        for i in incidents:
            yield {"type": "incident", **i.model_dump()}
        for r in risks:
            yield {"type": "risk", **asdict(r)}


def replay_file(
    src: Path,
    registry: Registry,
    out: Path,
    *,
    catalog: Catalog | None = None,
    maintenance: list[MaintenanceWindow] | None = None,
    correlation_rules: list[CorrelationRule] | None = None,
    correlation_window_s: float = 300.0,
    incident_quiet_s: float = 300.0,
    lateness_s: float = 60.0,
    batch_size: int = 1000,
    correlation: list[CorrelationRule] | None = None,
    risk: bool = True,
    scope_quiet_s: float = 600.0,
) -> ReplayReport:
    """Replay `src` through a fresh engine and write the events to `out` as JSON lines; with
    `correlation` rules, the scope stage too (and enterprise risk colours unless `risk` is off)."""
    report = ReplayReport()
    engine = RuleEngine(
        registry,
        catalog,
        correlation_window_s=correlation_window_s,
        incident_quiet_s=incident_quiet_s,
        lateness_s=lateness_s,
        maintenance=maintenance,
        correlation_rules=correlation_rules,
    )
    messages = read_messages(src, report)
    stage2 = None
    if correlation is not None:
        classes = {e.id: e.supervision_class for e in registry.enterprises.values()} if risk else None
        stage2 = Stage2(correlation, classes, int(scope_quiet_s * 1000), int(correlation_window_s * 1000))
    with open(out, "wb") as fh:
        for event in replay_messages(messages, engine, report, batch_size=batch_size, source=src, stage2=stage2):
            fh.write(orjson.dumps(event, option=orjson.OPT_SORT_KEYS) + b"\n")
    # Decode errors came in file order, the engine's in event-time order: report all by line.
    prefix = len(f"{src}:")
    report.errors.sort(key=lambda e: int(e[prefix:].split(":", 1)[0]))
    return report
