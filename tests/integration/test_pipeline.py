"""One reading's whole path on the real broker and InfluxDB: a scripted leak through the worker.

The worker's output is checked against `safewatch replay` of the very same messages: the
same engine must give the same hazards and incidents in the stream as offline.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter, defaultdict
from types import SimpleNamespace

import orjson
import pytest

from rules.replay import replay_file
from safewatch.settings import DEADLETTER_TOPIC, HAZARDS_TOPIC, INCIDENTS_TOPIC, TELEMETRY_TOPICS
from safewatch.stack import ensure_topics
from sensors.registry import load_registry
from sensors.simulator import PlantSimulator, default_demo_scenarios, demo_leak_target, leak_sensor_ids
from streams.influx import query, rows
from streams.worker import topic_specs

from .pipeline_helpers import committed, metric, produce, read_topic, spawn, stop, wait_until

TICKS = 90


def isolated(stack, **extra):
    """Settings for one scenario: own topics, own consumer group."""
    run = uuid.uuid4().hex[:8]
    s = stack.model_copy(update={"topic_prefix": f"it-{run}.", "worker_id": f"it-worker-{run}",
                                 "session_timeout_s": 3.0, **extra})
    ensure_topics(s, topic_specs(s))
    return s


def simulate(registry, start_ms: int, ticks: int = TICKS, seed: int = 7):
    scen = default_demo_scenarios(registry, start_s=10, leak_s=40, silent_s=30, malformed_s=6)
    sim = PlantSimulator(registry, seed=seed, start_ms=start_ms, tick_s=1.0, scenarios=scen)
    return [m for _ in range(ticks) for m in sim.tick()]


def replay(registry, msgs, tmp):
    src, out = tmp / "input.jsonl", tmp / "replay.jsonl"
    src.write_bytes(b"".join(v + b"\n" for _, _, v in msgs))
    report = replay_file(src, registry, out)
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return report, [e for e in events if e["type"] == "hazard"], [e for e in events if e["type"] == "incident"]


def by_site(events, key):
    out = defaultdict(list)
    for e in events:
        out[e["site_id"]].append(key(e))
    return dict(out)


@pytest.fixture(scope="module")
def leak_run(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leak")
    settings = isolated(stack)
    registry = load_registry(settings.registry)
    start_ms = int(time.time() * 1000) - 3_600_000  # an hour ago, so this run has its own InfluxDB window
    msgs = simulate(registry, start_ms)
    worker = spawn(settings, tmp / "worker.log", "worker")
    try:
        produce(settings, msgs)
        wait_until(lambda: metric(settings, "safewatch_messages_total") >= len(msgs), 120,
                   f"the worker to read {len(msgs)} messages (log: {tmp / 'worker.log'})")
        hazards = read_topic(settings, HAZARDS_TOPIC, until=lambda m: True)
        incidents = read_topic(settings, INCIDENTS_TOPIC, until=lambda m: True)
        dead = read_topic(settings, DEADLETTER_TOPIC, until=lambda m: True)
    finally:
        stop(worker)
    report, r_hazards, r_incidents = replay(registry, msgs, tmp)
    site, area = demo_leak_target(registry)
    return SimpleNamespace(settings=settings, registry=registry, msgs=msgs, start_ms=start_ms, hazards=hazards,
                           incidents=incidents, dead=dead, replay_report=report, r_hazards=r_hazards,
                           r_incidents=r_incidents, site=site, area=area, tmp=tmp)


def test_scripted_leak_gives_gas_and_temperature_hazards_and_one_incident(leak_run):
    gas, temp = leak_sensor_ids(leak_run.registry, leak_run.site, leak_run.area)
    opened = {(h["sensor_id"], h["kind"]) for h in leak_run.hazards if h["event"] == "open"}
    assert {(gas[0], "high"), (gas[0], "high_high"), (temp[0], "high")} <= opened
    cleared = {(h["sensor_id"], h["kind"]) for h in leak_run.hazards if h["event"] == "clear"}
    assert (gas[0], "high_high") in cleared  # the leak is over before the run ends
    at_site = [i for i in leak_run.incidents if i["site_id"] == leak_run.site]
    assert len({i["incident_id"] for i in at_site}) == 1
    assert at_site[0]["status"] == "open" and at_site[-1]["status"] == "closed"
    linked = set(at_site[-1]["hazard_ids"])
    assert {h["hazard_id"] for h in leak_run.hazards if h["site_id"] == leak_run.site} == linked
    assert at_site[-1]["severity"] == "orange"


def test_stream_and_replay_agree(leak_run):
    """Same input, same engine: the worker's hazards and incidents equal the replay's, per site."""
    assert leak_run.hazards, "the worker emitted no hazard"
    key_h = lambda e: (e["hazard_id"], e["event"], e["kind"], e["value"], e["peak"])  # noqa: E731
    key_i = lambda e: (e["incident_id"], e["status"], e["severity"], tuple(e["hazard_ids"]))  # noqa: E731
    assert by_site(leak_run.hazards, key_h) == by_site(leak_run.r_hazards, key_h)
    assert by_site(leak_run.incidents, key_i) == by_site(leak_run.r_incidents, key_i)


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
    last_bad_ts = max(d["reading"]["ts"] for d in leak_run.dead if "reading" in d and "ts" in d["reading"]) \
        if any("reading" in d and "ts" in d["reading"] for d in leak_run.dead) else leak_run.start_ms
    assert max(h["ts"] for h in leak_run.hazards) > last_bad_ts


def test_readings_hazards_incidents_are_queryable_in_influxdb(leak_run):
    s = leak_run.settings
    window = f"time >= {leak_run.start_ms}ms AND time < {leak_run.start_ms + TICKS * 1000}ms"
    sent = sum(len(orjson.loads(v)["readings"]) for _, k, v in leak_run.msgs
               if k == leak_run.site and v.startswith(b"{") and b'"readings"' in v and _is_frame_ok(v))
    got = rows(query(s, f"SELECT count(\"value\") FROM \"reading\" WHERE \"site_id\" = '{leak_run.site}' AND {window}"))
    assert got and got[0]["count"] == sent
    hz = rows(query(s, f"SELECT \"hazard_id\", \"kind\" FROM \"hazard\" WHERE \"site_id\" = '{leak_run.site}' "
                       f"AND {window}"))
    assert {r["hazard_id"] for r in hz} == {h["hazard_id"] for h in leak_run.hazards if h["site_id"] == leak_run.site}
    inc = rows(query(s, f"SELECT \"incident_id\", \"status\" FROM \"incident\" WHERE {window}"))
    assert {r["incident_id"] for r in inc} == {i["incident_id"] for i in leak_run.incidents}


def _is_frame_ok(v: bytes) -> bool:
    from sensors.schema import DecodeError, decode_message
    try:
        decode_message(v)
        return True
    except DecodeError:
        return False


def test_worker_restart_mid_stream_loses_no_hazard(stack, tmp_path):
    """SIGKILL the worker between two halves of a leak; the hazards equal an uninterrupted replay's."""
    settings = isolated(stack)
    registry = load_registry(settings.registry)
    start_ms = int(time.time() * 1000) - 2 * 3_600_000
    msgs = simulate(registry, start_ms, seed=11)
    # cut inside the leak: after its gas hazards opened, before they clear
    cut = next(i for i, (_, _, v) in enumerate(msgs) if b'"ts":' in v and _ts(v) >= start_ms + 30_000)
    log = tmp_path / "worker.log"
    worker = spawn(settings, log, "worker")
    try:
        produce(settings, msgs[:cut])
        wait_until(lambda: metric(settings, "safewatch_messages_total") >= cut, 120, "the first half")
        # Wait for the offsets to commit, so the new worker does not simply re-read the first
        # half: what it knew must come from the rule-state checkpoint.
        telemetry = [settings.topic(t) for t in TELEMETRY_TOPICS]
        wait_until(lambda: committed(settings, telemetry) >= cut, 30, "the first half's offsets to commit")
        stop(worker, signal.SIGKILL)  # no goodbye
        worker = spawn(settings, log, "worker")
        produce(settings, msgs[cut:])
        _, expected, expected_inc = replay(registry, msgs, tmp_path)
        want = {(h["hazard_id"], h["event"]) for h in expected}
        hazards = read_topic(settings, HAZARDS_TOPIC, until=lambda m: want <= {(h["hazard_id"], h["event"]) for h in m},
                             timeout=120)
    finally:
        stop(worker)
    got = Counter((h["hazard_id"], h["event"]) for h in hazards)
    assert want - set(got) == set(), "hazard events lost across the restart"
    assert set(got) - want == set(), "hazard events the uninterrupted run would not emit"
    opened = [h for h in expected if h["event"] == "open" and h["start"] < start_ms + 30_000]
    assert opened, "the cut must fall while hazards are open"


def _ts(v: bytes) -> int:
    try:
        return int(orjson.loads(v).get("ts", 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0
