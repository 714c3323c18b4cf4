"""`safewatch bench --correlation`: what linking hazards into incidents costs the hot path, and the second stage.

The rule engine alone (no Kafka, no JSON) on the shipped registry scaled to ~10,000 sensors, the
full catalogue both times: once with no correlation rules, once with every shipped one. A share of
the sensors go in and out of alarm all the time, so hazards keep opening and clearing and the
correlation rules have work on every batch — far more than a quiet province gives them.
"""

from __future__ import annotations

import time

from rich.table import Table

from config.settings import Settings
from rules.catalog import load_catalog
from rules.engine import RuleEngine
from rules.models import HazardEvent
from rules.patterns import load_correlation_rules
from rules.scope import ScopeEngine, rules_scopes, scope_records

from .rules_bench import Run, _batches, console, scaled_registry, time_engine

FLOOR = 0.15  # correlation may cost at most this share of the rules-only rate


def run_correlation_bench(
    settings: Settings,
    *,
    sensors: int = 10_000,
    readings: int = 2_000_000,
    batch_size: int = 5_000,
    hot_fraction: float = 0.05,
    churn_s: int = 30,
    rounds: int = 3,
) -> list[Run]:
    """Rules only vs rules + correlation on ~`sensors` sensors; the least CPU of `rounds` runs each."""
    catalog = load_catalog(settings.rules_dir)
    correlation = load_correlation_rules(settings.correlation_dir)
    reg = scaled_registry(settings.registry, sensors)
    batches = _batches(reg, readings, batch_size, seed=1, hot_fraction=hot_fraction, churn_s=churn_s)
    best: dict[str, Run] = {}
    hazards: list = []
    # Alternate the two so a busy neighbour on the machine slows both alike.
    for n in range(rounds):
        for label, rules in (("rules only", []), ("rules + correlation", correlation)):
            events = hazards if n == 0 and not rules else None
            run = time_engine(label, RuleEngine(reg, catalog, correlation_rules=rules), batches, events)
            if label not in best or run.cpu_seconds < best[label].cpu_seconds:
                best[label] = run
    per_hazard = _correlation_alone(reg, catalog, correlation, [h for h in hazards if isinstance(h, HazardEvent)])
    stage1: list = []  # the site stage's events (hazards and incidents) that the repartition carries
    time_engine("events", RuleEngine(reg, catalog, correlation_rules=correlation), batches, stage1)
    records, per_record = _second_stage(correlation, stage1)
    only, full = best["rules only"], best["rules + correlation"]
    table = Table(title="safewatch bench --correlation (rule engine alone, one process, least CPU of 3 each)")
    cols = (
        "run",
        "sensors",
        "readings",
        "readings/s",
        "readings/CPU s",
        "CPU µs/reading",
        "hazard ev.",
        "incident ev.",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in (only, full):
        table.add_row(
            r.label,
            f"{r.sensors:,}",
            f"{r.readings:,}",
            f"{r.per_s:,.0f}",
            f"{r.readings / r.cpu_seconds:,.0f}",
            f"{1e6 * r.cpu_seconds / r.readings:.2f}",
            f"{r.hazards:,}",
            f"{r.incidents:,}",
        )
    console.print(table)
    # CPU time, not wall time: on a shared machine the wall clock measures the neighbours too.
    cost = 1 - only.cpu_seconds / full.cpu_seconds
    hot_rules = sum(r.hot for r in correlation)
    # The hazard rate at which correlation would take FLOOR of the rules-only CPU per reading.
    ceiling = FLOOR * (only.cpu_seconds / only.readings) / per_hazard if per_hazard else float("inf")
    console.print(
        f"{hot_rules} site/area correlation rules; {hot_fraction:.0%} of sensors in and out of alarm every "
        f"{churn_s} s ({full.hazards / (full.readings / len(reg.sensors)):,.1f} hazard events per second of "
        f"event time); correlation costs {cost:.1%} of the rules-only rate by CPU "
        f"(floor < {FLOOR:.0%}: {'met' if cost < FLOOR else 'NOT met'}).\n"
        f"Correlation alone: {len(hazards):,} hazard events at {per_hazard * 1e6:.1f} CPU µs each "
        f"({1 / per_hazard:,.0f} hazard events/CPU s); it would reach {FLOOR:.0%} of the rules-only cost only "
        f"at one hazard event per {1 / ceiling:,.0f} readings.\n"
        f"Second stage (enterprise, county, city, province rules): {records:,} repartition records from this run's "
        f"events at {per_record * 1e6:.1f} CPU µs each ({1 / per_record if per_record else 0:,.0f} records/CPU s)."
    )
    return [only, full]


def _second_stage(correlation, events: list) -> tuple[int, float]:
    """Repartition records of the run's stage-1 events through the scope stage: count, CPU seconds each."""
    scopes = rules_scopes(correlation)
    records = [r for ev in events for r in scope_records(ev, scopes)]
    if not records:
        return 0, 0.0
    engine = ScopeEngine(correlation)
    start = time.process_time()
    for rec in records:
        engine.feed(rec)
    return len(records), (time.process_time() - start) / len(records)


def _correlation_alone(reg, catalog, correlation, hazards: list[HazardEvent]) -> float:
    """CPU seconds per hazard event for the site correlation alone, over the hazards of a run."""
    if not hazards:
        return 0.0
    engine = RuleEngine(reg, catalog, correlation_rules=correlation)
    start = time.process_time()
    for h in hazards:
        engine._correlate(h)
    return (time.process_time() - start) / len(hazards)
