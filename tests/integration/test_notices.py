"""Maintenance notices on the real broker: a site's instrument hazards give one notice (and one
task in the alert service), never an incident; a worker restarted after sites went quiet keeps
its offline timers for the start-up grace instead of flooding the duty room with site_offline."""

from __future__ import annotations

import signal
import time
import uuid

import httpx
import orjson
import pytest

from config.topics import HAZARDS_TOPIC, INCIDENTS_TOPIC, NOTICES_TOPIC, TELEMETRY_TOPICS
from rules.bindings import bind
from rules.catalog import load_catalog
from rules.notices import INSTRUMENT_KINDS
from sensors.registry import load_registry
from sensors.simulator import PlantSimulator

from .pipeline_helpers import committed, metric, produce, read_topic, spawn, stop, wait_for, wait_until
from .scenario import isolated
from .test_alerts import Receiver, api_headers, free_ports

SITE = "hz-zjg-tank01"
SILENT = "hz-zjg-tank01-t101-temp01"  # stops reporting at 3 s
BROKEN = "hz-zjg-tank01-t101-gas02"  # reads 110 %LEL (beyond NE 43's failure limit) from 2 s


def quiet_plants(registry, start_ms: int, ticks: int) -> list[tuple[str, str, bytes]]:
    """Every site in ordinary operation (no scenario); at SITE one sensor goes silent and one breaks."""
    sim = PlantSimulator(registry, seed=3, start_ms=start_ms, tick_s=1.0)
    out = []
    for t in range(ticks):
        for topic, key, value in sim.tick():
            if key == SITE and t >= 2:
                body = orjson.loads(value)
                body["readings"] = [
                    {**r, "value": 110.0} if r["sensor_id"] == BROKEN else r
                    for r in body["readings"]
                    if not (r["sensor_id"] == SILENT and t >= 3)
                ]
                if not body["readings"]:
                    continue
                value = orjson.dumps(body)
            out.append((topic, key, value))
    return out


@pytest.mark.asyncio
async def test_a_site_with_offline_and_faulty_sensors_gets_one_notice_and_one_task_never_an_incident(stack, tmp_path):
    settings = await isolated(stack)
    registry = load_registry(settings.registry)
    msgs = quiet_plants(registry, int(time.time() * 1000) - 20_000, 15)
    receiver = Receiver()
    routing = tmp_path / "routing.yaml"
    routing.write_text((settings.routing).read_text().replace("${ALERTS_API}/inbox", f"{receiver.url}/dept"))
    settings = settings.model_copy(
        update={
            "routing": routing,
            "alerts_db": tmp_path / "tasks.sqlite3",
            "alerts_group": f"it-notices-{uuid.uuid4().hex[:6]}",
            "alerts_port": free_ports()["alerts_port"],
        }
    )
    worker = spawn(settings, tmp_path / "worker.log", "worker")
    alerts = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
    try:
        await produce(settings, msgs)
        await wait_for(lambda: metric(settings, "safewatch_messages_total"), 120, "the worker", at_least=len(msgs))

        def joined(ns):
            kinds = {(f["kind"], f["sensor_id"]) for n in ns if n["site_id"] == SITE for f in n["faults"]}
            return {("offline", SILENT), ("sensor_fault", BROKEN)} <= kinds

        notices = await read_topic(settings, NOTICES_TOPIC, until=joined, timeout=150)
        hazards = await read_topic(settings, HAZARDS_TOPIC, until=lambda m: True, settle=0.5)
        incidents = await read_topic(settings, INCIDENTS_TOPIC, until=lambda m: True, settle=0.5)
        assert joined(notices), f"the site's notice never listed both sensors: {notices}"
        at_site = [n for n in notices if n["site_id"] == SITE]
        assert len({n["notice_id"] for n in at_site}) == 1, "one notice per site, not one per hazard"
        assert at_site[0]["status"] == "open"
        # the hazards themselves still go to `hazards`, for history
        instrument = {h["hazard_id"] for h in hazards if h["kind"] in INSTRUMENT_KINDS and h["site_id"] == SITE}
        assert {h["kind"] for h in hazards if h["hazard_id"] in instrument} >= {"offline", "sensor_fault"}
        assert set(at_site[-1]["hazard_ids"]) <= instrument
        assert not [i for i in incidents if i["site_id"] == SITE], "instrument health opened an incident"
        assert not {h for i in incidents for h in i["hazard_ids"]} & instrument
        # every site has at most one notice (the other sites' site_offline once the data ended)
        per_site: dict[str, set[str]] = {}
        for n in notices:
            per_site.setdefault(n["site_id"], set()).add(n["notice_id"])
        assert max(len(ids) for ids in per_site.values()) == 1

        # The duty room: one maintenance task for the notice, at the enterprise's duty room.
        headers = api_headers(settings)
        notice_id = at_site[0]["notice_id"]

        def tasks():
            r = httpx.get(f"{settings.alerts_api}/tasks", params={"incident_id": notice_id}, headers=headers, timeout=5)
            return r.json() if r.status_code == 200 else []

        wait_until(lambda: tasks(), 60, f"the notice's task (log: {tmp_path / 'alerts.log'})")
        (task,) = tasks()
        assert task["department"] == "enterprise-duty" and task["status"] in ("new", "delivered")
        delivered = lambda: [d for d, _, b in receiver.received if b["task"]["incident_id"] == notice_id]
        wait_until(delivered, 30, "the task's delivery")
        assert set(delivered()) == {"enterprise-duty"}
        assert not [b for _, _, b in receiver.received if b["task"]["incident_id"].startswith("INC-")]
    finally:
        stop(alerts)
        stop(worker)
        receiver.close()


@pytest.mark.asyncio
async def test_a_worker_restarted_after_sites_went_quiet_waits_the_grace_before_site_offline(stack, tmp_path):
    # First run: a long clock lag keeps every offline timer from firing before the stop, as if
    # the worker had stopped right after the plants went quiet.
    settings = await isolated(stack, clock_lag_s=600.0)
    registry = load_registry(settings.registry)
    msgs = quiet_plants(registry, int(time.time() * 1000) - 5_000, 5)
    sites = {k for _, k, _ in msgs}
    log = tmp_path / "worker.log"
    worker = spawn(settings, log, "worker")
    try:
        await produce(settings, msgs)
        telemetry = [settings.topic(t) for t in TELEMETRY_TOPICS]
        await wait_for(lambda: committed(settings, telemetry), 60, "the offsets to commit", at_least=len(msgs))
    finally:
        stop(worker)
    before = await read_topic(settings, HAZARDS_TOPIC, until=lambda m: True, settle=0.5)
    assert not [h for h in before if h["kind"] == "site_offline"]

    # Restart with the ordinary clock lag: without a grace every site whose offline limit is shorter
    # than the grace (most: 3-15 s; tailings ponds 90-180 s) would go offline within it.
    grace_s = 30.0
    gap_ms = bind(registry, load_catalog()).site_gap_ms
    quick = {s for s in sites if gap_ms[s] < (grace_s - 10) * 1000}
    assert len(quick) >= 10
    restarted = settings.model_copy(update={"clock_lag_s": 2.0, "site_offline_grace_s": grace_s})
    worker = spawn(restarted, log, "worker")
    started = time.monotonic()
    try:
        hazards = await read_topic(
            restarted, HAZARDS_TOPIC, until=lambda m: time.monotonic() - started > grace_s - 8, timeout=grace_s
        )
        offline = [h for h in hazards if h["kind"] in ("site_offline", "offline")]
        assert offline == [], f"{len(offline)} offline hazards within the grace"

        # After it the sites that are still silent do go offline, one site hazard each.
        def all_offline(m):
            return {h["site_id"] for h in m if h["kind"] == "site_offline" and h["event"] == "open"} >= quick

        hazards = await read_topic(restarted, HAZARDS_TOPIC, until=all_offline, timeout=90)
        assert all_offline(hazards), f"sites not offline after the grace (log: {log})"
        assert time.monotonic() - started >= grace_s - 3
        opened = [h for h in hazards if h["kind"] == "site_offline" and h["event"] == "open"]
        assert len(opened) == len({h["hazard_id"] for h in opened}) == len({h["site_id"] for h in opened})
        # one site hazard, not one per sensor (tailings sites, with a long site limit, may see their
        # fast sensors go offline one by one first: that is the rule, not the grace)
        assert not [h for h in hazards if h["kind"] == "offline" and h["site_id"] in quick]
        notices = await read_topic(restarted, NOTICES_TOPIC, until=lambda m: True, settle=1.0)
        assert {n["site_id"] for n in notices} >= quick
    finally:
        stop(worker, signal.SIGTERM)
