"""Rule files change under a running worker: applied without a restart, or refused whole if broken."""

from __future__ import annotations

import shutil
import time

import pytest

from config.topics import HAZARDS_TOPIC
from rules.catalog import CATALOG_DIR
from sensors.registry import load_registry
from sensors.schema import Frame, encode
from sensors.simulator import demo_leak_target, leak_sensor_ids

from .pipeline_helpers import metric, produce, read_topic, spawn, stop, wait_for
from .scenario import isolated

APPLIED = 'safewatch_rule_reloads_total{outcome="applied",what="rules"}'
REFUSED = 'safewatch_rule_reloads_total{outcome="refused",what="rules"}'


def frames(site, sensor, start_ms, seconds, value):
    return [
        (
            "telemetry.hazchem",
            site,
            encode(Frame(site_id=site, ts=start_ms + s * 1000, readings=[{"sensor_id": sensor, "value": value}])),
        )
        for s in seconds
    ]


@pytest.mark.asyncio
async def test_changed_rules_apply_without_restart_and_broken_ones_are_refused(stack, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(CATALOG_DIR, rules)
    settings = await isolated(stack, rules_dir=rules, rules_reload_s=0.3)
    registry = load_registry(settings.registry)
    site, area = demo_leak_target(registry)
    gas = leak_sensor_ids(registry, site, area)[0][0]
    t0 = int(time.time() * 1000) - 3_600_000
    log = tmp_path / "worker.log"
    worker = spawn(settings, log, "worker", "--loglevel", "info")
    try:
        await produce(settings, frames(site, gas, t0, range(0, 10), 20.0))  # below the 25 %LEL first level
        await wait_for(lambda: metric(settings, "safewatch_readings_total"), 90, "the first readings", at_least=10)
        assert await read_topic(settings, HAZARDS_TOPIC, timeout=3) == []

        hazchem = rules / "hazchem.yaml"
        text = hazchem.read_text()
        assert "above: 25, clear: 20" in text
        hazchem.write_text(text.replace("above: 25, clear: 20", "above: 15, clear: 12"))
        await wait_for(lambda: metric(settings, APPLIED), 30, "the changed rules to be applied", at_least=1)
        await produce(settings, frames(site, gas, t0, range(10, 20), 20.0))
        opened = await read_topic(settings, HAZARDS_TOPIC, until=lambda m: any(h["event"] == "open" for h in m))
        assert [(h["event"], h["kind"], h["threshold"]) for h in opened] == [("open", "high", 15.0)]
        assert opened[0]["ts"] >= t0 + 13_000  # the 3 s on-delay still holds

        hazchem.write_text(hazchem.read_text() + "\n  - {id: hazchem.broken, kind: threshold, bogus: 1}\n")
        await wait_for(lambda: metric(settings, REFUSED), 30, "the broken rules to be refused", at_least=1)
        await produce(settings, frames(site, gas, t0, range(20, 30), 60.0))
        later = await read_topic(settings, HAZARDS_TOPIC, until=lambda m: any(h["kind"] == "high_high" for h in m))
        hh = [h for h in later if h["kind"] == "high_high"]
        assert hh and hh[0]["threshold"] == 50.0  # the last good rules are still running
        assert worker.poll() is None
    finally:
        stop(worker)
    text = log.read_text()
    assert "changed ['hazchem.combustible_gas']" in text
    assert "keeping the previous rules" in text and "bogus" in text
