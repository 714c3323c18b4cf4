"""Stage-2 correlation (rules/scope.py): enterprise and region scopes over re-keyed entries."""

from __future__ import annotations

import orjson
import pytest

from rules.models import HazardEvent, IncidentEvent
from rules.patterns import CorrelationRule, Entry, load_correlation_rules
from rules.scope import QUIET_MS, Record, ScopeEngine, ScopeState, rules_scopes, scope_records

H = 3_600_000
T0 = 1_795_600_000_000


def entry(
    i: str,
    site: str,
    *,
    start: int,
    quantity="rainfall_1h",
    rule="mine.rainfall_1h",
    severity="yellow",
    region="320583",
    enterprise="E1",
    sector="mine",
    event="hazard",
) -> Entry:
    return Entry(
        id=i,
        site_id=site,
        sensor_id=f"{site}-s-{i}",
        area="weather",
        quantity=quantity,
        kind="high_yellow",
        rule_id=rule,
        severity=severity,
        sector=sector,
        enterprise_id=enterprise,
        region=region,
        start=start,
        event=event,
    )


def rec(e: Entry, op="open", scope="county", ts=None) -> Record:
    key = {
        "county": e.region,
        "city": e.region[:4] + "00",
        "enterprise": e.enterprise_id,
        "province": e.region[:2] + "0000",
    }[scope]
    return Record(scope, key, op, e.start if ts is None else ts, e)


def feed_all(engine: ScopeEngine, recs: list[Record]) -> list[IncidentEvent]:
    return [ev for r in recs for ev in engine.feed(r)]


@pytest.fixture(scope="module")
def shipped() -> list[CorrelationRule]:
    return load_correlation_rules("rules/correlation")


def rule(**kw) -> CorrelationRule:
    text = {"zh": "测试", "en": "test"}
    return CorrelationRule.model_validate({"id": "t.rule", "text": text, "action": text, "basis": "test", **kw})


RAIN2 = dict(
    kind="window",
    scope="county",
    any_of=[{"rule": ["mine.rainfall_1h"]}],
    count=2,
    distinct="sites",
    window_s=6 * 3600,
    severity="worst+1",
)


def test_two_ponds_of_one_county_make_one_county_incident(shipped):
    eng = ScopeEngine(shipped)
    a, b, c = (
        entry("h1", "pond-a", start=T0),
        entry("h2", "pond-b", start=T0 + 2 * H),
        entry("h3", "pond-c", start=T0 + 3 * H),
    )
    out = feed_all(eng, [rec(a), rec(b), rec(c)])
    rain = [o for o in out if o.rule_id == "region.county_rainstorm_ponds"]
    assert [o.status for o in rain] == ["open", "update"]
    first = rain[0]
    assert first.scope == "county" and first.scope_key == "320583" and first.region == "320583"
    assert first.site_id == "" and first.enterprise_id == "" and first.sector == "mine"
    assert first.severity == "orange"  # worst+1
    assert first.hazard_ids == ["h1", "h2"] and rain[1].hazard_ids == ["h1", "h2", "h3"]
    assert first.incident_id == rain[1].incident_id
    assert "and 1 more site" in first.title and "region.county_rainstorm_ponds" in first.summary
    assert first.timeline[0].what.startswith("high_yellow ")  # the alert service's `kinds`


def test_one_site_or_outside_the_window_is_not_a_county_incident():
    eng = ScopeEngine([rule(**RAIN2)])
    a, a2 = entry("h1", "pond-a", start=T0), entry("h2", "pond-a", start=T0 + H)
    late = entry("h3", "pond-b", start=T0 + 8 * H)
    assert feed_all(eng, [rec(a), rec(a2), rec(late)]) == []
    other_county = entry("h4", "pond-x", start=T0 + 8 * H, region="320584")
    assert feed_all(eng, [rec(other_county, scope="county")]) == []


def test_out_of_order_entries_use_event_time():
    eng = ScopeEngine([rule(**RAIN2)])
    b, a = entry("h2", "pond-b", start=T0 + 2 * H), entry("h1", "pond-a", start=T0)
    out = feed_all(eng, [rec(b), rec(a)])
    assert [o.status for o in out] == ["open"] and out[0].hazard_ids == ["h1", "h2"]


def test_redelivered_records_change_nothing():
    eng = ScopeEngine([rule(**RAIN2)])
    a, b = entry("h1", "pond-a", start=T0), entry("h2", "pond-b", start=T0 + H)
    recs = [rec(a), rec(b), rec(b), rec(a), rec(a, "clear", ts=T0 + 2 * H), rec(a, "clear", ts=T0 + 2 * H)]
    out = feed_all(eng, recs)
    assert [(o.status, o.open_hazard_ids) for o in out] == [("open", ["h1", "h2"]), ("update", ["h2"])]


def test_lifecycle_severity_up_never_down_and_close_after_quiet():
    eng = ScopeEngine([rule(**RAIN2)], quiet_ms=QUIET_MS)
    a, b = entry("h1", "pond-a", start=T0), entry("h2", "pond-b", start=T0 + H)
    out = feed_all(eng, [rec(a), rec(b)])
    assert out[-1].severity == "orange"
    worse = entry("h2", "pond-b", start=T0 + H, severity="red")
    out = eng.feed(rec(worse, "update", ts=T0 + 2 * H))
    assert [(o.status, o.severity) for o in out] == [("update", "red")]
    out = feed_all(eng, [rec(a, "clear", ts=T0 + 3 * H), rec(worse, "clear", ts=T0 + 4 * H)])
    assert [o.severity for o in out] == ["red", "red"] and out[-1].title.endswith("all clear")
    assert eng.advance(T0 + 4 * H + QUIET_MS - 1) == []
    closed = eng.advance(T0 + 4 * H + QUIET_MS + 5000)
    assert [(o.status, o.closed_at) for o in closed] == [("closed", T0 + 4 * H + QUIET_MS)]
    # the next rainstorm is a new incident
    c, d = entry("h5", "pond-a", start=T0 + 5 * H), entry("h6", "pond-b", start=T0 + 5 * H + 1)
    again = feed_all(eng, [rec(c), rec(d)])
    assert again[0].status == "open" and again[0].incident_id != out[0].incident_id


def test_a_new_entry_in_the_quiet_period_rejoins_the_incident():
    eng = ScopeEngine([rule(**RAIN2)])
    a, b = entry("h1", "pond-a", start=T0), entry("h2", "pond-b", start=T0 + 1)
    feed_all(eng, [rec(a), rec(b), rec(a, "clear", ts=T0 + H), rec(b, "clear", ts=T0 + H)])
    c = entry("h3", "pond-c", start=T0 + H + 60_000)
    out = eng.feed(rec(c))
    assert [(o.status, o.open_hazard_ids) for o in out] == [("update", ["h3"])]
    assert eng.advance(T0 + H + QUIET_MS + 1) == []


def test_a_late_event_closes_what_its_quiet_period_ended_first():
    eng = ScopeEngine([rule(**RAIN2)])
    a, b = entry("h1", "pond-a", start=T0), entry("h2", "pond-b", start=T0 + 1)
    feed_all(eng, [rec(a), rec(b), rec(a, "clear", ts=T0 + H), rec(b, "clear", ts=T0 + H)])
    c, d = entry("h3", "pond-c", start=T0 + 3 * H), entry("h4", "pond-d", start=T0 + 3 * H + 1)
    out = feed_all(eng, [rec(c), rec(d)])
    assert [o.status for o in out] == ["closed", "open"]


def test_enterprise_incidents_at_three_sites_in_a_day(shipped):
    eng = ScopeEngine(shipped)
    incs = [entry(f"INC-{i}", f"site-{i}", start=T0 + i * 4 * H, event="incident", severity="yellow") for i in range(3)]
    out = feed_all(eng, [rec(e, scope="enterprise") for e in incs])
    assert [(o.status, o.rule_id, o.severity) for o in out] == [("open", "enterprise.incidents_three_sites", "orange")]
    assert out[0].enterprise_id == "E1" and out[0].region == "320583" and out[0].scope == "enterprise"
    # incidents that already closed still count in a window rule
    eng2 = ScopeEngine(shipped)
    recs = []
    for e in incs:
        recs += [rec(e, scope="enterprise"), rec(e, "clear", scope="enterprise", ts=e.start + H)]
    assert [o.status for o in feed_all(eng2, recs)][:1] == ["open"]


def test_coactive_city_red_incidents(shipped):
    eng = ScopeEngine(shipped)
    a = entry("INC-a", "site-a", start=T0, event="incident", severity="red", region="320583")
    b = entry("INC-b", "site-b", start=T0 + 10 * H, event="incident", severity="red", region="320506")
    out = feed_all(eng, [rec(a, scope="city"), rec(a, "clear", scope="city", ts=T0 + H), rec(b, scope="city")])
    assert out == []  # not open at the same time
    c = entry("INC-c", "site-c", start=T0 + 11 * H, event="incident", severity="red", region="320582")
    out = eng.feed(rec(c, scope="city"))
    assert [(o.status, o.scope_key, o.severity, o.region) for o in out] == [("open", "320500", "red", "320500")]


def test_all_of_and_sectors():
    r = rule(
        kind="window",
        scope="county",
        sectors=["mine"],
        window_s=3600,
        all_of=[{"rule": ["mine.rainfall_1h"]}, {"quantity": ["pond_water_level"]}],
    )
    eng = ScopeEngine([r])
    rain = entry("h1", "pond-a", start=T0)
    other = entry("h2", "tank", start=T0 + 1, quantity="pond_water_level", rule="x", sector="hazchem")
    level = entry("h3", "pond-b", start=T0 + 2, quantity="pond_water_level", rule="mine.tailings_pond_level")
    out = feed_all(eng, [rec(rain), rec(other), rec(level)])
    assert [(o.status, o.hazard_ids) for o in out] == [("open", ["h1", "h3"])]


def test_sequence_rule():
    r = rule(
        kind="sequence",
        scope="enterprise",
        window_s=3600,
        first={"quantity": ["rainfall_1h"]},
        then={"quantity": ["pond_water_level"]},
    )
    eng = ScopeEngine([r])
    level_first = entry("h0", "pond-b", start=T0 - 1, quantity="pond_water_level")
    rain, level = entry("h1", "pond-a", start=T0), entry("h2", "pond-b", start=T0 + 60_000, quantity="pond_water_level")
    out = feed_all(
        eng, [rec(level_first, scope="enterprise"), rec(rain, scope="enterprise"), rec(level, scope="enterprise")]
    )
    assert [(o.status, o.hazard_ids) for o in out] == [("open", ["h1", "h2"])]


def test_absence_fires_on_an_idle_scope_by_the_timer():
    r = rule(kind="absence", scope="province", window_s=600, first={"min_severity": "red"}, missing="clear")
    eng = ScopeEngine([r])
    red = entry("h1", "site-a", start=T0, severity="red")
    assert eng.feed(rec(red, scope="province")) == []
    assert eng.advance(T0 + 599_000) == []
    out = eng.advance(T0 + 3_600_000)  # nothing came for an hour: the timer alone fires it
    assert [(o.status, o.opened_at, o.scope_key) for o in out] == [("open", T0 + 600_000, "320000")]
    assert eng.advance(T0 + 7_200_000) == []  # once
    # cleared in time: no absence
    eng2 = ScopeEngine([r])
    eng2.feed(rec(red, scope="province"))
    eng2.feed(rec(red, "clear", scope="province", ts=T0 + 300_000))
    assert eng2.advance(T0 + 3_600_000) == []


def test_checkpoint_round_trip_gives_the_same_events():
    recs = [
        rec(entry("h1", "pond-a", start=T0)),
        rec(entry("h2", "pond-b", start=T0 + H)),
        rec(entry("h1", "pond-a", start=T0), "clear", ts=T0 + 2 * H),
        rec(entry("h3", "pond-c", start=T0 + 2 * H)),
    ]
    whole = ScopeEngine([rule(**RAIN2)])
    expected = feed_all(whole, recs) + whole.advance(T0 + 10 * H)
    for cut in range(len(recs) + 1):
        a = ScopeEngine([rule(**RAIN2)])
        got = feed_all(a, recs[:cut])
        snaps = {k: orjson.loads(orjson.dumps(a.snapshot(k))) for k in a.states}
        b = ScopeEngine([rule(**RAIN2)])
        for k, s in snaps.items():
            b.restore(k, s)
        got += feed_all(b, recs[cut:]) + b.advance(T0 + 10 * H)
        assert [o.model_dump() for o in got] == [o.model_dump() for o in expected], cut
    assert ScopeState.from_dict(whole.snapshot("county:320583")).to_dict() == whole.snapshot("county:320583")


def test_pruning_forgets_old_cleared_entries_only():
    eng = ScopeEngine([rule(**RAIN2)])
    a = entry("h1", "pond-a", start=T0)
    eng.feed(rec(a))
    eng.feed(rec(a, "clear", ts=T0 + H))
    eng.advance(T0 + H + 1)
    assert "h1" in eng.states["county:320583"].entries
    eng.advance(T0 + H + eng.keep_ms + 1)
    assert eng.states["county:320583"].entries == {}


def _hazard(event="open", kind="high_yellow", **kw) -> HazardEvent:
    base = dict(
        hazard_id="HZ-1",
        event=event,
        kind=kind,
        level=1,
        severity="yellow",
        rule_id="mine.rainfall_1h",
        site_id="pond-a",
        sensor_id="pond-a-rain",
        enterprise_id="E1",
        region="320583",
        sector="mine",
        area="weather",
        quantity="rainfall_1h",
        unit="mm/h",
        threshold=16.0,
        value=20.0,
        peak=20.0,
        start=T0,
        ts=T0,
    )
    return HazardEvent(**(base | kw))


def test_scope_records_of_stage_one_events():
    recs = scope_records(_hazard(), ["enterprise", "county", "city", "province"])
    assert [(r.scope, r.key, r.state_key) for r in recs] == [
        ("enterprise", "E1", "enterprise:E1"),
        ("county", "320583", "county:320583"),
        ("city", "320500", "city:320500"),
        ("province", "320000", "province:320000"),
    ]
    assert Record.from_json(recs[1].to_json()) == recs[1]
    assert scope_records(_hazard(kind="offline"), ["county"]) == []
    assert scope_records(_hazard(event="suppressed"), ["county"]) == []
    clear = scope_records(_hazard(event="clear", end=T0 + 5, ts=T0 + 5), ["county"])[0]
    assert (clear.op, clear.ts, clear.entry.cleared_at) == ("clear", T0 + 5, T0 + 5)


def test_rules_scopes(shipped):
    assert rules_scopes(shipped) == ["enterprise", "county", "city"]


def test_replay_runs_the_scope_stage_after_stage_one(tmp_path):
    from rules.catalog import load_catalog
    from rules.replay import replay_file
    from sensors.registry import load_registry

    lines = []
    for i in range(20):
        for site, sensor, value in (
            ("hz-zjg-tank01", "hz-zjg-tank01-t101-gas01", 55.0),
            ("hz-zjg-jetty01", "hz-zjg-jetty01-b1-gas01", 30.0),
        ):
            r = {"site_id": site, "sensor_id": sensor, "ts": T0 + i * 1000, "value": value, "quality": "good"}
            lines.append(orjson.dumps(r))
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    pair = rule(
        kind="window", scope="county", any_of=[{"min_severity": "yellow"}], count=2, distinct="sites", window_s=3600
    )
    report = replay_file(src, load_registry(), out, catalog=load_catalog(), correlation=[pair])
    events = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    scoped = [e for e in events if e["type"] == "incident" and e["scope"] == "county"]
    assert [(e["status"], e["scope_key"], e["severity"]) for e in scoped] == [("open", "320582", "orange")]
    risk = [e for e in events if e["type"] == "risk"]
    assert risk[-1]["enterprise_id"] == "913205828486022959" and risk[-1]["colour"] == "orange"
    assert report.scope_incidents == 1 and report.risks == len(risk)
    # the scope incident comes after the stage-1 event that caused it
    first = next(i for i, e in enumerate(events) if e["type"] == "incident" and e["scope"] == "county")
    assert any(e["type"] == "hazard" and e["site_id"] == "hz-zjg-jetty01" for e in events[:first])


def test_the_stage_skips_what_a_keys_checkpoint_covers_and_restores_only_its_partitions():
    from config.settings import Settings
    from sensors.producer import kafka_partition
    from sensors.registry import load_registry
    from streams.scope_stage import ScopeStage

    settings = Settings()
    a, b = entry("h1", "pond-a", start=T0), entry("h2", "pond-b", start=T0 + H)
    recs = [rec(a), rec(b)]
    p = kafka_partition(b"county:320583", 4)
    first = ScopeStage(settings, load_registry(), [rule(**RAIN2)])
    assert first.apply(p, 10, recs[0].to_json()) == ([], [])
    snaps = {k.decode(): orjson.loads(v) for k, v in first.snapshots()}
    assert list(snaps) == ["scope:county:320583"] and snaps["scope:county:320583"]["src"] == [p, 10]
    # A restart: the key's partition restores it, another partition's restore does not.
    other = ScopeStage(settings, load_registry(), [rule(**RAIN2)])
    assert other.adopt([(p + 1) % 4], 4, snaps) == 0
    again = ScopeStage(settings, load_registry(), [rule(**RAIN2)])
    assert again.adopt([p], 4, snaps) == 1
    assert again.apply(p, 10, recs[0].to_json()) == ([], [])  # covered by the checkpoint: skipped
    events, _ = again.apply(p, 11, recs[1].to_json())
    assert [e.status for e in events] == ["open"] and events[0].hazard_ids == ["h1", "h2"]
    msgs, lines = again.outputs(events, [])
    assert msgs[0][1] == b"county:320583" and lines[0].startswith("incident,") and "scope=county" in lines[0]
    assert again.release(p) == ["county:320583"] and again.engine.states == {}
    assert again.apply(p, 12, b"not json") == ([], [])  # counted and logged, never fatal


def test_a_region_keeps_only_what_its_rules_can_use(shipped):
    # A county in a storm of hazards no regional rule matches (gas at chemical plants): none is
    # kept, so its state and checkpoints stay small, and the rain that matters still pairs.
    eng = ScopeEngine(shipped)
    gas = [
        entry(
            f"g{i}", f"plant-{i % 40}", start=T0 + i, quantity="gas_lel", rule="hazchem.gas_lel_high", sector="hazchem"
        )
        for i in range(3000)
    ]
    assert feed_all(eng, [rec(g) for g in gas] + [rec(g, "clear", ts=g.start + 5) for g in gas]) == []
    county = eng.states["county:320583"]
    assert county.entries == {}
    a, b = entry("h1", "pond-a", start=T0 + H), entry("h2", "pond-b", start=T0 + 2 * H)
    out = feed_all(eng, [rec(a), rec(b)])
    assert [o.rule_id for o in out] == ["region.county_rainstorm_ponds"] and set(county.entries) == {"h1", "h2"}
    # A hazard below a rule's colour is kept: its colour may rise (red-only city rule, incidents).
    blue = entry("i1", "site-a", start=T0, event="incident", severity="blue", rule="x", sector="hazchem")
    feed_all(eng, [rec(blue, scope="city")])
    assert "i1" in eng.states["city:320500"].entries
    # The enterprise scope keeps everything: its risk colour counts every open hazard.
    feed_all(eng, [rec(gas[0], scope="enterprise")])
    assert "g0" in eng.states["enterprise:E1"].entries


def test_a_reload_closes_what_a_removed_rule_had_open_and_new_rules_apply():
    eng = ScopeEngine([rule(**RAIN2)])
    a, b = entry("h1", "pond-a", start=T0), entry("h2", "pond-b", start=T0 + H)
    assert [o.status for o in feed_all(eng, [rec(a), rec(b)])] == ["open"]
    closed = eng.set_rules([])
    assert [(o.status, o.rule_id, o.closed_at) for o in closed] == [("closed", "t.rule", T0 + H)]
    assert closed[0].timeline[-1].what == "closed: its rule was removed"
    assert eng.states["county:320583"].incidents == {}
    c = entry("h3", "pond-c", start=T0 + 2 * H)
    assert feed_all(eng, [rec(c)]) == []  # no rule uses it: nothing fires, and it is not kept
    assert eng.set_rules([rule(**RAIN2)]) == []  # nothing open to close
    d, e = entry("h4", "pond-d", start=T0 + 3 * H), entry("h5", "pond-e", start=T0 + 3 * H + 1)
    out = feed_all(eng, [rec(d), rec(e)])
    # h1 and h2 made the incident the removal closed: the rule put back does not count them again.
    assert [(o.status, o.hazard_ids) for o in out] == [("open", ["h4", "h5"])]
