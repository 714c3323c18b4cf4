"""One reading's whole path on the real broker and InfluxDB: a scripted leak through the worker.

The worker's output is checked against `safewatch replay` of the very same messages: the
same engine must give the same hazards and incidents in the stream as offline.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import orjson
import pytest

from config.topics import HAZARDS_TOPIC, TELEMETRY_TOPICS
from rules.correlation import NOT_CORRELATED
from sensors.registry import load_registry
from sensors.simulator import leak_sensor_ids
from streams.influx import query, rows

from .pipeline_helpers import committed, metric, produce, read_topic, spawn, stop, wait_for
from .scenario import TICKS, by_site, isolated, replay, simulate, until


def test_scripted_leak_gives_gas_and_temperature_hazards_and_one_incident(leak_run):
    gas, temp = leak_sensor_ids(leak_run.registry, leak_run.site, leak_run.area)
    opened = {(h["sensor_id"], h["kind"]) for h in leak_run.hazards if h["event"] == "open"}
    assert {(gas[0], "high"), (gas[0], "high_high"), (temp[0], "high")} <= opened
    cleared = {(h["sensor_id"], h["kind"]) for h in leak_run.hazards if h["event"] == "clear"}
    assert (gas[0], "high_high") in cleared  # the leak is over before the run ends
    at_site = [i for i in leak_run.incidents if i["site_id"] == leak_run.site]
    assert len({i["incident_id"] for i in at_site}) == 1
    # All clear by the end; it resolves only after INCIDENT_QUIET_S without a hazard, past this run.
    assert at_site[0]["status"] == "open" and at_site[-1]["open_hazard_ids"] == []
    assert at_site[-1]["title"].endswith("all clear")
    linked = set(at_site[-1]["hazard_ids"])
    last = leak_run.start_ms + (TICKS - 1) * 1000
    assert {
        h["hazard_id"]
        for h in until(leak_run.hazards, last)
        if h["site_id"] == leak_run.site and h["kind"] not in NOT_CORRELATED
    } == linked
    assert at_site[-1]["severity"] == "orange"


def test_stream_and_replay_agree(leak_run):
    """Same input, same engine: the worker's hazards and incidents equal the replay's, per site."""
    assert leak_run.hazards, "the worker emitted no hazard"
    key_h = lambda e: (e["hazard_id"], e["event"], e["kind"], e["value"], e["peak"])
    key_i = lambda e: (e["incident_id"], e["status"], e["severity"], tuple(e["hazard_ids"]))
    last = leak_run.start_ms + (TICKS - 1) * 1000
    assert by_site(until(leak_run.hazards, last), key_h) == by_site(leak_run.r_hazards, key_h)
    assert by_site(until(leak_run.incidents, last, "updated_at"), key_i) == by_site(leak_run.r_incidents, key_i)
    # maintenance notices too: the silent sensor's site has one, and it is the replay's
    key_n = lambda e: (e["notice_id"], e["status"], e["updated_at"], [(f["kind"], f["sensor_id"]) for f in e["faults"]])
    assert leak_run.r_notices, "the silent sensor gave no notice"
    assert by_site(until(leak_run.notices, last, "updated_at"), key_n) == by_site(leak_run.r_notices, key_n)


def test_malformed_input_is_dead_lettered_with_reason_and_the_stream_goes_on(leak_run):
    reasons = Counter(d["reason"] for d in leak_run.dead)
    assert reasons == leak_run.replay_report.refused  # every message replay refuses, the stream dead-letters
    assert set(reasons) <= {"malformed_json", "invalid_field"} and sum(reasons.values()) >= 3
    for d in leak_run.dead:
        assert d["detail"] and d["topic"].startswith(leak_run.settings.topic_prefix)
        assert "raw" in d or "reading" in d
    bad_value = [d for d in leak_run.dead if d["reason"] == "invalid_field"]
    assert any("value" in d["detail"] for d in bad_value)
    # readings after the malformed burst were still evaluated: hazards exist later than the last dead letter
    last_bad_ts = (
        max(d["reading"]["ts"] for d in leak_run.dead if "reading" in d and "ts" in d["reading"])
        if any("reading" in d and "ts" in d["reading"] for d in leak_run.dead)
        else leak_run.start_ms
    )
    assert max(h["ts"] for h in leak_run.hazards) > last_bad_ts


def test_readings_hazards_incidents_are_queryable_in_influxdb(leak_run):
    s = leak_run.settings
    window = f"time >= {leak_run.start_ms}ms AND time < {leak_run.start_ms + TICKS * 1000}ms"
    sent = sum(
        len(orjson.loads(v)["readings"])
        for _, k, v in leak_run.msgs
        if k == leak_run.site and v.startswith(b"{") and b'"readings"' in v and _is_frame_ok(v)
    )
    got = rows(query(s, f'SELECT count("value") FROM "reading" WHERE "site_id" = \'{leak_run.site}\' AND {window}'))
    assert got and got[0]["count"] == sent
    hz = rows(query(s, f'SELECT "hazard_id", "kind" FROM "hazard" WHERE "site_id" = \'{leak_run.site}\' AND {window}'))
    assert {r["hazard_id"] for r in hz} == {h["hazard_id"] for h in leak_run.hazards if h["site_id"] == leak_run.site}
    inc = rows(query(s, f'SELECT "incident_id", "status" FROM "incident" WHERE {window}'))
    assert {r["incident_id"] for r in inc} == {i["incident_id"] for i in leak_run.incidents}


def _is_frame_ok(v: bytes) -> bool:
    from sensors.schema import DecodeError, decode_message

    try:
        decode_message(v)
        return True
    except DecodeError:
        return False


@pytest.mark.asyncio
async def test_worker_restart_mid_stream_loses_no_hazard(stack, tmp_path):
    """SIGKILL the worker between two halves of a leak; the hazards equal an uninterrupted replay's."""
    settings = await isolated(stack)
    registry = load_registry(settings.registry)
    start_ms = int(time.time() * 1000) - 2 * 3_600_000
    msgs = simulate(registry, start_ms, seed=11)
    # cut inside the leak: after its gas hazards opened, before they clear
    cut = next(i for i, (_, _, v) in enumerate(msgs) if b'"ts":' in v and _ts(v) >= start_ms + 30_000)
    log = tmp_path / "worker.log"
    worker = spawn(settings, log, "worker")
    try:
        await produce(settings, msgs[:cut])
        await wait_for(lambda: metric(settings, "safewatch_messages_total"), 120, "the first half", at_least=cut)
        # Wait for the offsets to commit, so the new worker does not simply re-read the first
        # half: what it knew must come from the rule-state checkpoint.
        telemetry = [settings.topic(t) for t in TELEMETRY_TOPICS]
        await wait_for(lambda: committed(settings, telemetry), 30, "the first half's offsets to commit", at_least=cut)
        stop(worker, signal.SIGKILL)  # no goodbye
        worker = spawn(settings, log, "worker")
        await produce(settings, msgs[cut:])
        _, expected, expected_inc = replay(registry, msgs, tmp_path)
        want = {(h["hazard_id"], h["event"]) for h in expected}
        hazards = await read_topic(
            settings, HAZARDS_TOPIC, until=lambda m: want <= {(h["hazard_id"], h["event"]) for h in m}, timeout=120
        )
    finally:
        stop(worker)
    last = start_ms + (TICKS - 1) * 1000
    got = Counter((h["hazard_id"], h["event"]) for h in until(hazards, last))
    assert want - set(got) == set(), "hazard events lost across the restart"
    assert set(got) - want == set(), "hazard events the uninterrupted run would not emit"
    opened = [h for h in expected if h["event"] == "open" and h["start"] < start_ms + 30_000]
    assert opened, "the cut must fall while hazards are open"


def _ts(v: bytes) -> int:
    try:
        return int(orjson.loads(v).get("ts", 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0


@pytest.mark.asyncio
async def test_a_graceful_stop_checkpoints_and_commits_what_it_did(stack, tmp_path):
    """SIGTERM right after a batch: its checkpoint and offsets are written at the stop, not read again."""
    settings = await isolated(stack, commit_interval_s=600.0)  # no commit but the stop's own
    registry = load_registry(settings.registry)
    msgs = simulate(registry, int(time.time() * 1000) - 3_600_000, ticks=20)
    log = tmp_path / "worker.log"
    worker = spawn(settings, log, "worker")
    try:
        await produce(settings, msgs)
        await wait_for(lambda: metric(settings, "safewatch_messages_total"), 120, "the batch", at_least=len(msgs))
    finally:
        stop(worker)  # SIGTERM
    assert worker.returncode == 0, log.read_text()[-2000:]
    assert await committed(settings, [settings.topic(t) for t in TELEMETRY_TOPICS]) == len(msgs)
    assert "no final checkpoint" not in log.read_text()
