"""Every sector's scenario file through the running worker on the real broker: the same hazards as replay.

tests/unit/test_sector_scenarios.py checks the files through `safewatch replay` against their
hand-written expectations; here the same bytes go to `telemetry.<sector>` keyed by site, one
worker evaluates all six sectors at once, and its hazard topic must hold exactly the replay's
transitions (up to each site's last reading: after it the live clock runs on and sites go
offline, which a replay whose clock stops with the data never sees).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
import yaml

from config.topics import DEADLETTER_TOPIC, HAZARDS_TOPIC, INCIDENTS_TOPIC, SECTORS
from rules.catalog import load_catalog
from rules.replay import replay_file
from sensors.registry import load_registry
from sensors.schema import DecodeError, decode_message

from ..unit.test_sector_scenarios import check_incidents, incident_outcomes
from .pipeline_helpers import metric, produce, read_topic, spawn, stop, wait_for
from .scenario import isolated

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"
SITE = re.compile(rb'"site_id":"([^"]+)"')  # malformed lines are cut short, but their site id survives


def messages(sector: str) -> list[tuple[str, str, bytes]]:
    """The file's lines as (topic, key, value), keyed by site as a gateway would send them."""
    out = []
    for line in (SCENARIOS / f"{sector}.jsonl").read_bytes().splitlines():
        m = SITE.search(line)
        assert m, f"{sector}.jsonl: a line without a site id"
        out.append((f"telemetry.{sector}", m.group(1).decode(), line))
    return out


def transitions(events: list[dict], last_ts: dict[str, int]) -> set[tuple]:
    return {
        (h["hazard_id"], h["sensor_id"] or h["site_id"], h["kind"], h["event"], h["start"], h["flapping"])
        for h in events
        if "hazard_id" in h and h["ts"] <= last_ts.get(h["site_id"], -1)
    }


def incident_events(events: list[dict], last_ts: dict[str, int]) -> set[tuple]:
    return {
        (i["incident_id"], i["status"], i["severity"], i["rule_id"], i["updated_at"], tuple(i["open_hazard_ids"]))
        for i in events
        if i.get("type") == "incident" and i["updated_at"] <= last_ts.get(i["site_id"], -1)
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sector_run(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sectors")
    settings = await isolated(stack)
    registry, catalog = load_registry(settings.registry), load_catalog()
    sent = [m for sector in SECTORS for m in messages(sector)]
    worker = spawn(settings, tmp / "worker.log", "worker", "--loglevel", "warning")
    try:
        await produce(settings, sent)
        await wait_for(
            lambda: metric(settings, "safewatch_messages_total"),
            180,
            f"the worker to read {len(sent)} messages (log: {tmp / 'worker.log'})",
            at_least=len(sent),
        )
        live = await read_topic(settings, HAZARDS_TOPIC, until=lambda m: True, settle=3.0)
        live += [{"type": "incident", **i} for i in await read_topic(settings, INCIDENTS_TOPIC, until=lambda m: True)]
        dead = await read_topic(settings, DEADLETTER_TOPIC, until=lambda m: True)
    finally:
        stop(worker)
    replayed, refused = {}, Counter()
    for sector in SECTORS:
        out = tmp / f"{sector}.out.jsonl"
        refused += replay_file(SCENARIOS / f"{sector}.jsonl", registry, out, catalog=catalog).refused
        replayed[sector] = list(map(orjson.loads, out.read_bytes().splitlines()))
    return live, replayed, dead, refused


def last_reading(sector: str) -> dict[str, int]:
    """Per site, the event time of its last well-formed message in the file."""
    last: dict[str, int] = defaultdict(lambda: -1)
    for line in (SCENARIOS / f"{sector}.jsonl").read_bytes().splitlines():
        try:
            msg = decode_message(line)
        except DecodeError:
            continue
        last[msg.site_id] = max(last[msg.site_id], msg.ts)
    return dict(last)


@pytest.mark.parametrize("sector", SECTORS)
def test_worker_opens_the_same_hazards_as_replay(sector_run, sector):
    live, replayed, _, _ = sector_run
    last = last_reading(sector)
    mine = [h for h in live if h["sector"] == sector]
    want = transitions(replayed[sector], last)
    assert want, f"the {sector} replay opened nothing"
    got = transitions(mine, last)
    assert (want - got, got - want) == (set(), set())
    designed = yaml.safe_load((SCENARIOS / f"{sector}.expected.yaml").read_text(encoding="utf-8"))["expected"]
    opened = {(t[1], t[2]) for t in got if t[3] == "open"}
    assert {(e["subject"], e["kind"]) for e in designed} <= opened


@pytest.mark.parametrize("sector", SECTORS)
def test_worker_gives_the_designed_incidents_as_replay(sector_run, sector):
    """Incident events up to each site's last reading equal replay's, and they are the designed ones."""
    live, replayed, _, _ = sector_run
    last = last_reading(sector)
    mine = [i for i in live if i.get("type") == "incident" and i["sector"] == sector]
    want = incident_events(replayed[sector], last)
    assert want, f"the {sector} replay gave no incident"
    assert (want - incident_events(mine, last), incident_events(mine, last) - want) == (set(), set())
    doc = yaml.safe_load((SCENARIOS / f"{sector}.expected.yaml").read_text(encoding="utf-8"))
    # After a site's last reading the live clock runs on (sites go offline); only events up to it count.
    check_incidents(doc, incident_outcomes([i for i in mine if i["updated_at"] <= last.get(i["site_id"], -1)]))


def test_worker_dead_letters_what_replay_refuses(sector_run):
    _, _, dead, refused = sector_run
    assert sum(refused.values()) >= 1
    assert Counter(d["reason"] for d in dead) == refused
