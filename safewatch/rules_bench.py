"""`safewatch bench --rules`: the rule engine alone, full catalogue vs thresholds only, one process.

The registry is the shipped one, its sites copied until there are ~10,000 sensors, so every
rule of the catalogue meets the quantities it was written for. Readings are generated as
columns (no Kafka, no JSON): this measures rule evaluation, the part that must stay O(1)
amortised per reading. A few sensors sit in alarm so the per-reading walk is exercised too.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from config.settings import Settings
from rules.batch import Batch
from rules.catalog import load_catalog
from rules.engine import RuleEngine
from sensors.registry import Registry, parse_registry
from sensors.simulator import default_baseline

console = Console(width=150)


def scaled_registry(path, sensors: int) -> Registry:
    """The shipped registry with its sites repeated until it has about `sensors` sensors."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    base = sum(len(site["sensors"]) for e in doc["enterprises"] for site in e["sites"])
    copies = max(1, round(sensors / base))
    for ent in doc["enterprises"]:
        originals = ent["sites"]
        ent["sites"] = []
        for c in range(copies):
            for site in originals:
                s = copy.deepcopy(site)
                s["id"] = f"{site['id']}-c{c}"
                for sen in s["sensors"]:
                    sen["id"] = f"{sen['id']}-c{c}"
                ent["sites"].append(s)
    return parse_registry(yaml.safe_dump(doc, allow_unicode=True), f"{path} ×{copies}")


@dataclass
class Run:
    label: str
    sensors: int
    readings: int
    seconds: float
    hazards: int
    incidents: int = 0
    cpu_seconds: float = 0.0  # this process's CPU time: what a busy neighbour on the machine does not add

    @property
    def per_s(self) -> float:
        return self.readings / self.seconds


def _batches(registry: Registry, readings: int, batch_size: int, seed: int, hot_fraction: float, churn_s: int = 0):
    """Columns of readings: each tick every sensor once, site by site, values near normal.

    With `churn_s`, the hot sensors go in and out of alarm (`churn_s` s past their first set point,
    then `churn_s` s back, each from its own phase), so hazards keep opening and clearing.
    """
    rng = np.random.default_rng(seed)
    sensors = list(registry.sensors.values())
    n = len(sensors)
    base = np.array([default_baseline(s) for s in sensors])
    lo = np.array([s.range[0] for s in sensors])
    hi = np.array([s.range[1] for s in sensors])
    span = hi - lo
    state = np.array([s.unit == "bool" for s in sensors])
    hot = rng.random(n) < hot_fraction
    high = np.array([s.alarms.high if s.alarms.high is not None else np.nan for s in sensors])
    base = np.where(hot & ~np.isnan(high), high + 0.01 * span, base)  # a few sensors sit in alarm
    idx_all = np.arange(n)
    t0 = 1_795_000_000_000
    ticks = max(1, readings // n)
    noise = rng.normal(0, 0.005, (ticks, n)) * span
    values = np.where(state, base, base + noise)
    if churn_s:
        normal = np.array([default_baseline(s) for s in sensors])
        phase = rng.integers(0, 2 * churn_s, n)
        calm = ((np.arange(ticks)[:, None] + phase[None, :]) // churn_s) % 2 == 1
        values = np.where(calm & hot, normal + noise, values)
    values = np.clip(values, lo, hi).round(3).ravel()  # inside the instrument range
    ts = np.repeat(t0 + np.arange(ticks, dtype=np.int64) * 1000, n)
    idx = np.tile(idx_all, ticks)
    # The same batch size whatever the registry size, so per-reading costs compare fairly.
    good = np.ones(len(idx), dtype=bool)
    return [
        Batch(
            idx=idx[s : s + batch_size],
            ts=ts[s : s + batch_size],
            value=values[s : s + batch_size],
            good=good[s : s + batch_size],
        )
        for s in range(0, len(idx), batch_size)
    ]


def time_engine(label: str, engine: RuleEngine, batches: list[Batch], events: list | None = None) -> Run:
    """Process every batch, advancing the clock after each; wall time of the whole run.

    `events`, when given, collects every hazard and incident event in order.
    """
    hazards = incidents = 0
    start, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        for res in (engine.process(b), engine.advance(int(b.ts[-1]))):
            hazards += len(res.hazards)
            incidents += len(res.incidents)
            if events is not None:
                events.extend(res.events)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Run(label, len(engine.sensors), sum(len(b) for b in batches), seconds, hazards, incidents, cpu)


def run_rules_bench(
    settings: Settings,
    *,
    sensors: int = 10_000,
    readings: int = 2_000_000,
    batch_size: int = 50_000,
    hot_fraction: float = 0.02,
) -> list[Run]:
    """Full catalogue vs thresholds only on ~`sensors` sensors, plus a 10× smaller registry for scaling."""
    catalog = load_catalog(settings.rules_dir)
    runs = []
    for n in (sensors // 10, sensors):
        reg = scaled_registry(settings.registry, n)
        batches = _batches(reg, readings, batch_size, seed=1, hot_fraction=hot_fraction)
        for label, cat in (("thresholds only (registry set points)", None), ("full catalogue", catalog)):
            runs.append(time_engine(label, RuleEngine(reg, cat), batches))
    table = Table(title="safewatch bench --rules (rule engine alone, one process)")
    for col in ("rules", "sensors", "readings", "readings/s", "µs/reading", "hazard events"):
        table.add_column(col, justify="left" if col == "rules" else "right")
    for r in runs:
        table.add_row(
            r.label, f"{r.sensors:,}", f"{r.readings:,}", f"{r.per_s:,.0f}", f"{1e6 / r.per_s:.2f}", f"{r.hazards:,}"
        )
    console.print(table)
    growth = runs[1].per_s / runs[3].per_s  # full catalogue: µs/reading at 10× the sensors ÷ at 1×
    console.print(
        f"batches of {batch_size:,} readings, {hot_fraction:.0%} of sensors held in alarm; full catalogue "
        f"µs/reading at {runs[3].sensors:,} sensors ÷ at {runs[1].sensors:,}: {growth:.2f} "
        "(1.0 = O(1) amortised per reading)"
    )
    return runs
