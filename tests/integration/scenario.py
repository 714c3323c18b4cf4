"""The scripted-leak scenario shared by the integration tests: simulate, run, replay."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from types import SimpleNamespace

import orjson
import pytest_asyncio

from config.topics import DEADLETTER_TOPIC, HAZARDS_TOPIC, INCIDENTS_TOPIC, NOTICES_TOPIC
from rules.catalog import load_catalog
from rules.replay import replay_file
from safewatch.stack import ensure_topics_async
from sensors.registry import load_registry
from sensors.simulator import PlantSimulator, default_demo_scenarios, demo_leak_target
from streams.worker import topic_specs

from .pipeline_helpers import metric, produce, read_topic, spawn, stop, wait_for

TICKS = 90


async def isolated(stack, **extra):
    """Settings for one scenario: own topics (created here), own consumer group."""
    run = uuid.uuid4().hex[:8]
    s = stack.model_copy(
        update={"topic_prefix": f"it-{run}.", "worker_id": f"it-worker-{run}", "session_timeout_s": 3.0, **extra}
    )
    specs = topic_specs(s)
    assert sorted(await ensure_topics_async(s, specs)) == sorted(specs), "the run's topics existed before it"
    return s


def simulate(registry, start_ms: int, ticks: int = TICKS, seed: int = 7):
    scen = default_demo_scenarios(registry, start_s=10, leak_s=40, silent_s=30, malformed_s=6)
    sim = PlantSimulator(registry, seed=seed, start_ms=start_ms, tick_s=1.0, scenarios=scen)
    return [m for _ in range(ticks) for m in sim.tick()]


def replay(registry, msgs, tmp):
    src, out = tmp / "input.jsonl", tmp / "replay.jsonl"
    src.write_bytes(b"".join(v + b"\n" for _, _, v in msgs))
    report = replay_file(src, registry, out, catalog=load_catalog())
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return report, [e for e in events if e["type"] == "hazard"], [e for e in events if e["type"] == "incident"]


def replayed_notices(tmp):
    """The notice events of the last `replay` into `tmp`."""
    events = [orjson.loads(line) for line in (tmp / "replay.jsonl").read_bytes().splitlines()]
    return [e for e in events if e["type"] == "notice"]


def until(events, last_ts: int, field: str = "ts"):
    """Events up to the input's last reading: after it, the live worker's clock runs on and every
    site goes offline, which a replay (whose clock stops with the data) rightly never sees."""
    return [e for e in events if e[field] <= last_ts]


def by_site(events, key):
    out = defaultdict(list)
    for e in events:
        out[e["site_id"]].append(key(e))
    return dict(out)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def leak_run(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leak")
    settings = await isolated(stack)
    registry = load_registry(settings.registry)
    start_ms = int(time.time() * 1000) - 3_600_000  # an hour ago, so this run has its own InfluxDB window
    msgs = simulate(registry, start_ms)
    worker = spawn(settings, tmp / "worker.log", "worker")
    try:
        await produce(settings, msgs)
        await wait_for(
            lambda: metric(settings, "safewatch_messages_total"),
            120,
            f"the worker to read {len(msgs)} messages (log: {tmp / 'worker.log'})",
            at_least=len(msgs),
        )
        hazards = await read_topic(settings, HAZARDS_TOPIC, until=lambda m: True)
        incidents = await read_topic(settings, INCIDENTS_TOPIC, until=lambda m: True)
        notices = await read_topic(settings, NOTICES_TOPIC, until=lambda m: True)
        dead = await read_topic(settings, DEADLETTER_TOPIC, until=lambda m: True)
    finally:
        stop(worker)
    report, r_hazards, r_incidents = replay(registry, msgs, tmp)
    r_notices = replayed_notices(tmp)
    site, area = demo_leak_target(registry)
    return SimpleNamespace(
        settings=settings,
        registry=registry,
        msgs=msgs,
        start_ms=start_ms,
        hazards=hazards,
        incidents=incidents,
        notices=notices,
        r_notices=r_notices,
        dead=dead,
        replay_report=report,
        r_hazards=r_hazards,
        r_incidents=r_incidents,
        site=site,
        area=area,
        tmp=tmp,
    )
