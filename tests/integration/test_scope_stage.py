"""Correlation's scope stage on the real broker: the worker's repartition, county incidents, risk
colours on the compacted topic, and a SIGKILL of `safewatch scope` that changes nothing."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from collections import defaultdict

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from config.topics import INCIDENTS_TOPIC, RISK_TOPIC, SCOPE_TOPIC, telemetry_topic
from rules.patterns import CORRELATION_DIR, Entry
from rules.scope import Record
from sensors.registry import load_registry
from streams.influx import query, rows
from streams.scope_stage import ScopeStage

from .pipeline_helpers import committed, produce, read_topic, spawn, stop, wait_for
from .scenario import isolated

pytestmark = pytest.mark.asyncio(loop_scope="session")

PAIR_RULE = """
rules:
  - id: test.county_pair
    kind: window
    scope: county
    any_of: [{min_severity: yellow}]
    count: 2
    distinct: sites
    window_s: 3600
    severity: worst
    text: {zh: 测试, en: hazards at two sites of one county}
    action: {zh: 测试, en: test}
    basis: "this test's choice"
"""


async def test_two_sites_of_one_county_make_one_county_incident_and_a_risk_colour(stack, tmp_path):
    rules = tmp_path / "correlation"
    rules.mkdir()
    (rules / "test.yaml").write_text(PAIR_RULE)
    shutil.copy(CORRELATION_DIR / "site.yaml", rules)  # the site rules: an orange hazard is an incident alone
    settings = await isolated(stack, correlation_dir=rules)
    now = int(time.time() * 1000) - 60_000
    # Two sites of one enterprise in county 320582: an L2 gas reading at the tank farm (orange, an
    # incident alone), an L1 at the jetty (yellow, no site incident).
    msgs = []
    for i in range(20):
        for site, sensor, value in (
            ("hz-zjg-tank01", "hz-zjg-tank01-t101-gas01", 55.0),
            ("hz-zjg-jetty01", "hz-zjg-jetty01-b1-gas01", 30.0),
        ):
            reading = {"site_id": site, "sensor_id": sensor, "ts": now + i * 1000, "value": value, "quality": "good"}
            msgs.append((telemetry_topic("hazchem"), site, orjson.dumps(reading)))
    worker = spawn(settings, tmp_path / "worker.log", "worker")
    try:
        await produce(settings, msgs)

        def county(ms):
            return [m for m in ms if m.get("scope") == "county"]

        def settled(ms):
            c = county(ms)
            return c and c[-1]["severity"] == "orange" and any(m["scope"] == "site" for m in ms)

        incidents = await read_topic(settings, INCIDENTS_TOPIC, until=settled, timeout=90)
        scoped = county(incidents)
        # One county incident; it may open at yellow (both sites' first alarms) and go orange when the
        # tank farm's second level joins, depending on which site's events reach the stage first.
        assert {(i["scope_key"], i["rule_id"], i["incident_id"]) for i in scoped} == {
            ("320582", "test.county_pair", scoped[0]["incident_id"])
        }, f"log: {tmp_path / 'worker.log'}"
        assert scoped[0]["status"] == "open" and all(i["status"] == "update" for i in scoped[1:])
        assert scoped[-1]["severity"] == "orange"
        assert scoped[0]["site_id"] == "" and scoped[0]["region"] == "320582" and scoped[0]["sector"] == "hazchem"
        assert len(scoped[-1]["hazard_ids"]) >= 2 and "and 1 more site" in scoped[-1]["title"]
        assert [i for i in incidents if i["scope"] == "site"], f"the site incident is there too: {incidents}"

        risks = await read_topic(
            settings, RISK_TOPIC, until=lambda ms: any(m["colour"] == "orange" for m in ms), timeout=60
        )
        newest = {r["enterprise_id"]: r for r in risks}
        assert newest["913205828486022959"]["colour"] == "orange"
        assert newest["913205828486022959"]["supervision_class"] == "C"

        def stored():
            return query(settings, "SELECT * FROM enterprise_risk WHERE enterprise_id = '913205828486022959'")

        await wait_for(stored, 30, "the risk colour in InfluxDB")
        points = rows(stored())
        assert points[-1]["colour"] == "orange" and points[-1]["supervision_class"] == "C"
        county_points = rows(query(settings, "SELECT * FROM incident_state WHERE \"scope\" = 'county'"))
        assert {p["region"] for p in county_points} == {"320582"} and not any(p.get("site_id") for p in county_points)
        records = await read_topic(settings, SCOPE_TOPIC, until=lambda ms: len(ms) >= 4, timeout=30)
        assert {(r["scope"], r["key"]) for r in records} == {("county", "320582"), ("enterprise", "913205828486022959")}
    finally:
        stop(worker)


def _records(seed: int, now: int) -> list[Record]:
    """Rainfall hazards at ponds of 12 counties and incidents at sites of 6 enterprises, some cleared."""
    rnd = random.Random(seed)
    out: list[Record] = []
    for c in range(12):
        county = f"3205{c:02d}"
        for s in range(4):
            site = f"pond-{c}-{s}"
            for k in range(rnd.randint(1, 3)):
                start = now + rnd.randint(0, 3_600_000)
                e = Entry(
                    id=f"HZ-{c}-{s}-{k}",
                    site_id=site,
                    sensor_id=f"{site}-rain",
                    area="weather",
                    quantity="rainfall_1h",
                    kind="high_yellow",
                    rule_id="mine.rainfall_1h",
                    severity=rnd.choice(["yellow", "yellow", "orange", "red"]),
                    sector="mine",
                    enterprise_id=f"E{c}",
                    region=county,
                    start=start,
                )
                out.append(Record("county", county, "open", start, e))
                if rnd.random() < 0.5:
                    out.append(Record("county", county, "clear", start + 600_000, e))
    for n in range(6):
        for s in range(4):
            start = now + rnd.randint(0, 3_600_000)
            e = Entry(
                id=f"INC-{n}-{s}",
                site_id=f"site-{n}-{s}",
                sensor_id="",
                area="",
                quantity="",
                kind="incident",
                rule_id="correlation.severe_alone",
                severity=rnd.choice(["yellow", "orange", "red"]),
                sector="hazchem",
                enterprise_id=f"E-{n}",
                region="320583",
                start=start,
                event="incident",
            )
            out.append(Record("enterprise", e.enterprise_id, "open", start, e))
            if rnd.random() < 0.5:
                out.append(Record("enterprise", e.enterprise_id, "clear", start + 900_000, e))
    return out


async def _log(settings, topic: str) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of everything on a topic, in each partition's order."""
    c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    try:
        name = settings.topic(topic)
        tps = [TopicPartition(name, p) for p in sorted(c.partitions_for_topic(name) or await _parts(c, name))]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: list[tuple[int, int, bytes]] = []
        idle = 0
        while idle < 10:
            got = await c.getmany(timeout_ms=200)
            idle = 0 if got else idle + 1
            for tp, ms in got.items():
                out += [(tp.partition, m.offset, m.value) for m in ms]
        return out
    finally:
        await c.stop()


async def _parts(c, name):
    await c._client.force_metadata_update()
    return c.partitions_for_topic(name)


async def _above(value, floor: int) -> bool:
    return await value > floor


def _distinct(events: list[dict]) -> dict[str, list[dict]]:
    """Per incident, its events in order with the exact repeats a restart re-emits removed."""
    out: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e not in out[e["incident_id"]]:
            out[e["incident_id"]].append(e)
    return dict(out)


async def test_sigkill_of_the_scope_stage_changes_nothing(stack, tmp_path):
    settings = await isolated(stack, scope_stage=False)
    registry = load_registry(settings.registry)
    # Event times from 5 minutes ago into the next hour: no quiet period ends on the stage's clock
    # (wall time) during the test, so its timers close nothing the records do not close themselves.
    recs = _records(seed=13, now=int(time.time() * 1000) - 300_000)
    # Each key's records in order (one producer, keyed: one partition each), sent while the stage runs.
    chunks = [recs[i : i + 40] for i in range(0, len(recs), 40)]
    group = settings.model_copy(update={"worker_id": f"{settings.worker_id}-scope"})
    stage = spawn(settings, tmp_path / "scope.log", "scope")
    kills, before = 0, 0
    topics = [settings.topic(SCOPE_TOPIC)]
    try:
        for n, chunk in enumerate(chunks):
            await produce(settings, [(SCOPE_TOPIC, r.state_key, r.to_json()) for r in chunk])
            await asyncio.sleep(0.3)
            if n in (len(chunks) // 3, 2 * len(chunks) // 3):
                # This process has committed some work of its own, then is killed a moment later
                # with records read and not yet committed (or not yet checkpointed).
                await wait_for(lambda b=before: _above(committed(group, topics), b), 90, "progress")
                await produce(settings, [(SCOPE_TOPIC, r.state_key, r.to_json()) for r in chunks[n + 1]])
                chunks[n + 1] = []
                await asyncio.sleep(random.Random(n).uniform(0.1, 1.0))
                stage.send_signal(signal.SIGKILL)
                stage.wait()
                kills += 1
                before = await committed(group, topics)
                stage = spawn(settings, tmp_path / "scope.log", "scope")
        await wait_for(
            lambda: committed(group, topics),
            120,
            f"the stage to commit all {len(recs)} records (log {tmp_path / 'scope.log'})",
            at_least=len(recs),
        )
    finally:
        stop(stage)
    assert kills == 2

    # The same records, in each partition's order, through the same code with no kill.
    log = await _log(settings, SCOPE_TOPIC)
    assert len(log) == len(recs)
    pure = ScopeStage(settings, registry)
    expected_incidents: list[dict] = []
    expected_risk: dict[str, str] = {}
    for partition, offset, value in log:
        events, risks = pure.apply(partition, offset, value)
        expected_incidents += [orjson.loads(e.to_json()) for e in events]
        expected_risk.update({r.enterprise_id: r.colour for r in risks})
    assert expected_incidents, "the records make scope incidents"

    got = await read_topic(settings, INCIDENTS_TOPIC, until=lambda m: True, settle=3)
    assert _distinct(got) == _distinct(expected_incidents)  # none lost, none different, none extra
    risks = await read_topic(settings, RISK_TOPIC, until=lambda m: True, settle=2)
    assert {r["enterprise_id"]: r["colour"] for r in risks} == expected_risk
