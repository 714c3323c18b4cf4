"""Inspectors' histories against the real InfluxDB after a real simulated run (the shared leak scenario)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.auth import issue_token
from alerts.routing import load_routing
from alerts.store import TaskStore
from history.accidents import AccidentInput, to_accident
from history.filters import FilterError, make_filters
from history.query import NotFound
from history.retention import RAW, ROLLUP_1H, ROLLUP_1M, backfill, shown_policies
from history.service import Caller, History
from history.timefmt import RangeError
from streams.influx import query, rows

from .pipeline_helpers import env_of
from .scenario import TICKS

ADMIN = Caller("test-inspector", "inspector")


@pytest.fixture(scope="module")
def run(leak_run):
    """The leak run, its window, and a history service over its InfluxDB."""
    s = leak_run.settings
    start, end = leak_run.start_ms - 60_000, leak_run.start_ms + 3_600_000
    h = History(s)
    yield leak_run, h, start, end
    h.close()


def test_raw_is_the_default_policy_and_rollups_have_continuous_queries(stack):
    pols = {p["name"]: p for p in shown_policies(stack)}
    assert pols[RAW]["default"] is True and pols[RAW]["duration"] == "720h0m0s"
    assert pols[ROLLUP_1M]["duration"] == "9600h0m0s" and pols[ROLLUP_1H]["duration"] == "43920h0m0s"
    assert pols["events"]["duration"] == "43920h0m0s" and not pols["events"]["default"]
    cqs = httpx.get(f"{stack.influx}/query", params={"q": "SHOW CONTINUOUS QUERIES"}, timeout=5).json()
    series = next(s for s in cqs["results"][0]["series"] if s["name"] == stack.influx_db)
    names = {v[0] for v in series["values"]}
    assert names == {"cq_reading_rollup_1m", "cq_reading_rollup_1h"}
    text = " ".join(v[1] for v in series["values"])
    for fn in ("min", "mean", "max", "last", "count"):
        assert f"{fn}(value) AS {fn}" in text


def test_backfilled_rollups_agree_with_raw(run):
    lr, h, start, end = run
    written = backfill(lr.settings, start, end)
    assert written[ROLLUP_1M] > 0 and written[ROLLUP_1H] > 0
    db = lr.settings.influx_db
    sensor = next(iter(lr.registry.sites[lr.site].sensor_ids))
    hour = 3_600_000  # hour-aligned: the 1-hour buckets are stamped with their hour's start
    w = f"sensor_id = '{sensor}' AND time >= {start // hour * hour}ms AND time < {-(-end // hour) * hour}ms"
    raw = rows(query(lr.settings, f"SELECT count(value), min(value), max(value) FROM reading WHERE {w}"))[0]
    for rp in (ROLLUP_1M, ROLLUP_1H):
        got = rows(
            query(lr.settings, f'SELECT sum("count"), min("min"), max("max") FROM "{db}"."{rp}".reading WHERE {w}')
        )[0]
        assert (got["sum"], got["min"], got["max"]) == (raw["count"], raw["min"], raw["max"]), rp


def test_hazards_match_what_the_worker_published(run):
    lr, h, start, end = run
    published = {e["hazard_id"] for e in lr.hazards if e["event"] != "suppressed"}
    f = make_filters(h.registry, start, end)
    got, truncated = h.rows(ADMIN, "hazards", f)
    assert not truncated
    # history reads the long-kept copy of events; it holds exactly what the default policy holds
    db, w = lr.settings.influx_db, f"time >= {start}ms"  # dead-letters carry the wall-clock time
    for m, field in (("hazard", "hazard_id"), ("incident", "incident_id"), ("deadletter", "count")):
        raw = rows(query(lr.settings, f'SELECT count("{field}") FROM "{m}" WHERE {w}'))
        kept = rows(query(lr.settings, f'SELECT count("{field}") FROM "{db}"."events"."{m}" WHERE {w}'))
        assert raw and kept == raw, m
    stored = {r["hazard_id"]: r for r in got}
    assert published <= set(stored)
    # After the last reading the worker's clock runs on and sites go offline until it stops: those
    # hazards may be stored after the topic was read; nothing else may be extra.
    last = lr.start_ms + TICKS * 1000
    extra = [stored[i] for i in set(stored) - published]
    assert all(x["start"] >= last and x["kind"] in ("offline", "site_offline") for x in extra), extra
    site = h.registry.sites[lr.site]
    at_site = [r for r in got if r["site_id"] == lr.site]
    assert at_site, "the leak site has hazards"
    r = at_site[0]
    assert r["site_name"] == site.name and r["enterprise_name"] == h.registry.enterprises[site.enterprise_id].name
    assert r["start_local"].endswith("+08:00") and r["tz"] == "Asia/Shanghai"
    # every filter narrows to exactly what it names
    by_name = h.rows(
        ADMIN,
        "hazards",
        make_filters(h.registry, start, end, enterprise=h.registry.enterprises[site.enterprise_id].name),
    )[0]
    assert {x["hazard_id"] for x in by_name} == {
        x["hazard_id"] for x in got if x["enterprise_id"] == site.enterprise_id
    }
    region = h.registry.enterprises[site.enterprise_id].region
    by_region = h.rows(ADMIN, "hazards", make_filters(h.registry, start, end, region=region[:4]))[0]
    assert by_region and all(x["region"].startswith(region[:4]) for x in by_region)
    kind_rule = r["rule_id"]
    by_rule = h.rows(ADMIN, "hazards", make_filters(h.registry, start, end, rule=kind_rule))[0]
    assert by_rule and {x["rule_id"] for x in by_rule} == {kind_rule}
    by_level = h.rows(ADMIN, "hazards", make_filters(h.registry, start, end, level=r["severity"]))[0]
    assert by_level and all(x["severity"] == r["severity"] for x in by_level)
    sensor = next(x for x in got if x["sensor_id"])["sensor_id"]
    by_sensor = h.rows(ADMIN, "hazards", make_filters(h.registry, start, end, sensor=sensor))[0]
    assert by_sensor and {x["sensor_id"] for x in by_sensor} == {sensor}
    # paging
    p1, p2 = h.page(ADMIN, "hazards", f, 2, 0), h.page(ADMIN, "hazards", f, 2, 2)
    assert p1.total == len(got) and [x["hazard_id"] for x in p1.rows + p2.rows] == [x["hazard_id"] for x in got[:4]]


def test_bad_input_is_refused_with_a_clear_error(run):
    lr, h, start, end = run
    with pytest.raises(FilterError, match="unknown site"):
        make_filters(h.registry, start, end, site="no-such-site")
    with pytest.raises(FilterError, match="unknown enterprise"):
        make_filters(h.registry, start, end, enterprise="Nobody Chemicals")
    with pytest.raises(FilterError, match="bad level"):
        make_filters(h.registry, start, end, level="purple")
    with pytest.raises(NotFound, match="no incident"):
        h.timeline(ADMIN, "inc-doesnotexist")
    from history.timefmt import parse_range

    with pytest.raises(RangeError, match="empty range"):
        parse_range("2026-12-02", "2026-12-01", h.tz)


def test_incidents_and_a_timeline_with_its_hazards_and_readings(run):
    lr, h, start, end = run
    published = {e["incident_id"] for e in lr.incidents}
    got, _ = h.rows(ADMIN, "incidents", make_filters(h.registry, start, end))
    assert {r["incident_id"] for r in got} == published and published
    leak = next(i for i in lr.incidents if i["site_id"] == lr.site)
    t = h.timeline(ADMIN, leak["incident_id"])
    assert t["incident"]["site_name"] == h.registry.sites[lr.site].name
    linked = {hid for i in lr.incidents if i["incident_id"] == leak["incident_id"] for hid in i["hazard_ids"]}
    assert linked <= {x["hazard_id"] for x in t["hazards"]}, "every hazard the incident linked is on its timeline"
    with_readings = [x for x in t["hazards"] if x["sensor_id"]]
    assert with_readings and all(x["readings"]["points"] for x in with_readings)
    assert [e["ts"] for e in t["entries"]] == sorted(e["ts"] for e in t["entries"])
    assert t["entries"][0]["ts_local"].endswith("+08:00")


def test_stats_of_the_leak_enterprise(run):
    lr, h, start, _ = run
    ent = h.registry.sites[lr.site].enterprise_id
    # Up to the last event the run read from the topic: after it the worker's clock ran on and
    # sites went offline (in InfluxDB, not in what the run read).
    end = max(e["ts"] for e in lr.hazards) + 1
    s = h.stats(ADMIN, make_filters(h.registry, start, end, enterprise=ent), [])
    opened = {
        e["hazard_id"]
        for e in lr.hazards
        if e["enterprise_id"] == ent and start <= e["start"] < end and e["event"] != "suppressed"
    }
    assert s["hazards_opened"] == len(opened) > 0
    assert sum(s["alarms_per_day"].values()) == len(opened)
    assert s["time_in_alarm_s"] > 0 and s["top_sensors"][0]["hazards"] >= 1


def test_readings_pick_raw_for_a_short_range_and_rollups_for_long_ones(run):
    lr, h, start, end = run
    from history.query import readings

    backfill(lr.settings, start, end)
    sensor = next(iter(lr.registry.sites[lr.site].sensor_ids))
    short = make_filters(h.registry, lr.start_ms, lr.start_ms + 120_000, sensor=sensor)
    res, pts = readings(lr.settings, h.registry, short)
    assert res.rp == RAW and pts
    long_ = make_filters(h.registry, lr.start_ms - 30 * 86_400_000 + 3_600_000, lr.start_ms + 3_600_000, sensor=sensor)
    res, pts = readings(lr.settings, h.registry, long_)
    in_short = sum(p["count"] for p in readings(lr.settings, h.registry, short)[1])
    assert res.rp == ROLLUP_1H and res.interval_s == 7200 and sum(p["count"] for p in pts) == in_short
    # a week: hourly buckets, the roll-up's own points read as they are
    week = make_filters(h.registry, lr.start_ms - 7 * 86_400_000 + 3_600_000, lr.start_ms + 3_600_000, sensor=sensor)
    res, pts = readings(lr.settings, h.registry, week)
    assert (res.rp, res.interval_s) == (ROLLUP_1H, 3600) and sum(p["count"] for p in pts) == in_short
    assert {"min", "mean", "max", "last", "count", "sensor_id", "time_local"} <= set(pts[0])


def test_http_endpoints_roles_exports_and_audit(run):
    lr, h, start, end = run
    s = lr.settings
    store = TaskStore(s.alerts_db_path)
    site = h.registry.sites[lr.site]
    other = next(e for e in h.registry.enterprises if e != site.enterprise_id)
    _, inspector = issue_token(store, "inspector", "inspector")
    _, mine = issue_token(store, "operator", "enterprise", site.enterprise_id)
    _, theirs = issue_token(store, "other operator", "enterprise", other)
    _, admin = issue_token(store, "admin", "admin")
    app = create_app(s, store, lambda: load_routing(s.routing, alerts_api=s.alerts_api))
    rng = {"since": f"{_iso(start)}", "until": f"{_iso(end)}"}
    with TestClient(app) as c:
        auth = lambda t: {"Authorization": f"Bearer {t}"}
        assert c.get("/history/hazards", params=rng).status_code == 401
        r = c.get("/history/hazards", params={**rng, "limit": 3}, headers=auth(inspector))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] >= len(body["rows"]) > 0 and body["rows"][0]["tz"] == "Asia/Shanghai"
        # an enterprise operator sees its own, never another's
        own = c.get("/history/hazards", params={**rng, "limit": 1000}, headers=auth(mine)).json()
        assert own["rows"] and {x["enterprise_id"] for x in own["rows"]} == {site.enterprise_id}
        assert (
            c.get(
                "/history/hazards", params={**rng, "enterprise": site.enterprise_id}, headers=auth(theirs)
            ).status_code
            == 403
        )
        assert c.get("/history/accidents", params=rng, headers=auth(mine)).status_code == 403
        # readings: at the resolution that fits, an operator only of its own sensors
        sensor = next(iter(site.sensor_ids))
        rd = c.get("/history/readings", params={**rng, "sensor": sensor}, headers=auth(inspector)).json()
        assert rd["rp"] == "raw" and rd["points"] and {p["sensor_id"] for p in rd["points"]} == {sensor}
        assert sum(p["count"] for p in rd["points"]) > 0 and rd["points"][0]["unit"]
        assert c.get("/history/readings", params={**rng, "sensor": sensor}, headers=auth(mine)).status_code == 200
        assert c.get("/history/readings", params={**rng, "sensor": sensor}, headers=auth(theirs)).status_code == 403
        assert c.get("/history/hazards", params={**rng, "site": lr.site}, headers=auth(theirs)).status_code == 403
        assert c.get("/history/readings", params=rng, headers=auth(inspector)).status_code == 422
        assert c.get("/history/audit", headers=auth(inspector)).status_code == 403
        # clear errors
        bad = c.get("/history/hazards", params={"since": "2026-12-02", "until": "2026-12-01"}, headers=auth(inspector))
        assert bad.status_code == 422 and "empty range" in bad.text
        assert c.get("/history/hazards", params={**rng, "site": "nope"}, headers=auth(inspector)).status_code == 422
        assert c.get("/history/incidents/inc-nope/timeline", headers=auth(inspector)).status_code == 404
        # exports
        csv_r = c.get("/history/export/hazards", params={**rng, "format": "csv"}, headers=auth(inspector))
        assert csv_r.status_code == 200 and csv_r.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(csv_r.text)))
        assert len(table) == int(csv_r.headers["X-Rows"]) == body["total"]
        assert {"hazard_id", "enterprise_name", "start_local"} <= set(table[0])
        js = c.get("/history/export/incidents", params={**rng, "format": "json"}, headers=auth(inspector))
        assert {x["incident_id"] for x in orjson.loads(js.content)} == {e["incident_id"] for e in lr.incidents}
        # accidents through the API
        acc = {
            "enterprise": site.enterprise_id,
            "site": lr.site,
            "time": _iso(lr.start_ms + 60_000),
            "type": "fire",
            "injuries": 1,
            "summary": "tank fire after the leak",
        }
        made = c.post("/history/accidents", json=acc, headers=auth(inspector))
        assert made.status_code == 201 and made.json()["new"] == 1
        assert (
            c.post("/history/accidents", json={**acc, "enterprise": "Nobody"}, headers=auth(inspector)).status_code
            == 422
        )
        listed = c.get("/history/accidents", params=rng, headers=auth(inspector)).json()
        assert [a["summary"] for a in listed] == ["tank fire after the leak"]
        # the audit log has every export and every read of important data, with row counts
        log = c.get("/history/audit", headers=auth(admin)).json()
        exports = [e for e in log if e["action"] == "export"]
        assert {(e["data_kind"], e["rows"]) for e in exports} >= {("hazards", body["total"])}
        assert any(e["action"] == "read" and e["data_kind"] == "hazards" and "inspector" in e["who"] for e in log)
        assert any(e["action"] == "write" and e["data_kind"] == "accidents" for e in log)
    store.close()


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "safewatch", "history", *args],
        env=env_of(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_line(run, tmp_path):
    lr, h, start, end = run
    s = lr.settings
    site = h.registry.sites[lr.site]
    ent = h.registry.enterprises[site.enterprise_id]
    rng = ["--since", _iso(start), "--until", _iso(end)]
    got = _cli(s, "hazards", *rng, "--enterprise", ent.name, "--format", "json", "--limit", "1000")
    assert got.returncode == 0, got.stderr
    page = orjson.loads(got.stdout)
    assert page["rows"] and {r["enterprise_id"] for r in page["rows"]} == {ent.id}
    table = _cli(s, "incidents", *rng, "--site", lr.site)
    assert table.returncode == 0 and site.name in table.stdout and "Asia/Shanghai" in table.stderr
    out = tmp_path / "hazards.csv"
    exported = _cli(s, "export", "hazards", *rng, "--format", "csv", "--out", str(out))
    assert (
        exported.returncode == 0
        and len(list(csv.DictReader(out.open())))
        == h.rows(ADMIN, "hazards", make_filters(h.registry, start, end))[0].__len__()
    )
    leak = next(i for i in lr.incidents if i["site_id"] == lr.site)["incident_id"]
    tl = _cli(s, "timeline", leak)
    assert tl.returncode == 0 and "incident open" in tl.stdout and "hazard" in tl.stdout
    rd = _cli(s, "readings", "--sensor", next(iter(site.sensor_ids)), *rng)
    assert rd.returncode == 0 and "from raw" in rd.stderr and len(list(csv.DictReader(io.StringIO(rd.stdout)))) > 1
    st = _cli(s, "stats", "--enterprise", ent.id, *rng, "--format", "json")
    assert st.returncode == 0 and orjson.loads(st.stdout)["hazards_opened"] > 0
    setup = _cli(s, "setup", "--backfill", "2h")
    assert setup.returncode == 0 and "rollup_1m" in setup.stdout and "backfilled" in setup.stdout, setup.stderr
    bad = _cli(s, "hazards", "--since", "2026-12-02", "--until", "2026-12-01")
    assert bad.returncode == 2 and "empty range" in bad.stderr
    unknown = _cli(s, "hazards", "--site", "no-such-site")
    assert unknown.returncode == 2 and "unknown site 'no-such-site'" in unknown.stderr
    # accidents: a file with one bad record is refused whole, naming the line
    bad_csv = tmp_path / "accidents.csv"
    bad_csv.write_text(
        "enterprise,site,time,type,deaths,injuries,summary\n"
        f"{ent.id},{lr.site},2026-11-01T08:00,fire,0,2,tank fire\n"
        f"Nobody Chemicals,,2026-11-02,explosion,1,0,\n"
    )
    refused = _cli(s, "accidents", "--import", str(bad_csv))
    assert refused.returncode == 2 and "record 2 (line 3)" in refused.stderr and "unknown enterprise" in refused.stderr
    assert not h.store.accidents(enterprise_id=ent.id, start_ms=0, end_ms=start)
    good = tmp_path / "accidents.json"
    good.write_text(
        orjson.dumps([{"enterprise": ent.name, "time": "2026-11-01T08:00", "type": "fire", "injuries": 2}]).decode()
    )
    assert _cli(s, "accidents", "--import", str(good)).returncode == 0
    listed = _cli(
        s, "accidents", "--enterprise", ent.id, "--since", "2026-10-01", "--until", "2026-11-02", "--format", "json"
    )
    assert [a["type"] for a in orjson.loads(listed.stdout)] == ["fire"]
    assert orjson.loads(listed.stdout)[0]["ts_local"] == "2026-11-01T08:00:00+08:00"


def test_associate_over_the_stored_history(run):
    lr, h, start, end = run
    s = lr.settings
    ent = h.registry.sites[lr.site].enterprise_id
    acc = AccidentInput(enterprise=ent, time=_iso(lr.start_ms - 5 * 86_400_000), type="poisoning", injuries=1)
    h.add_accidents(ADMIN, [to_accident(h.registry, acc, h.tz)], "test")
    short = _cli(s, "associate", "--since", _iso(start), "--until", _iso(end))
    assert short.returncode == 2 and "longer than the window" in short.stderr
    got = _cli(s, "associate", "--since", "90d", "--window-days", "30", "--format", "json")
    assert got.returncode == 0, got.stderr
    out = orjson.loads(got.stdout)
    assert out["hazards"] >= len({e["hazard_id"] for e in lr.hazards if e["event"] != "suppressed"})
    assert out["accidents"] >= 1 and {r["enterprise_id"] for r in out["risk"]} == set(h.registry.enterprises)
    assert all(r["enterprise_name"] for r in out["risk"])
