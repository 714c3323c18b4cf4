"""Site correlation: pairs within the window, severe hazards alone, closing, checkpoints."""

from __future__ import annotations

import orjson

from rules.engine import RuleEngine

from .rules_helpers import T0, frame, run


def incidents(results):
    return [i for r in results for i in r.incidents]


def opened(results):
    """(sensor, kind) of every hazard opened: the pairs that could have been correlated."""
    return [(h.sensor_id, h.kind) for r in results for h in r.hazards if h.event == "open"]


def test_two_sensors_within_window_open_one_incident(mini_registry):
    eng = RuleEngine(mini_registry, correlation_window_s=300)
    res = [run(eng, frame("site-a", 0, a_gas1=30, a_temp1=20)), run(eng, frame("site-a", 120, a_gas1=30, a_temp1=65))]
    inc = incidents(res)
    assert [i.status for i in inc] == ["open"]
    assert len(inc[0].hazard_ids) == 2 and inc[0].severity == "yellow"
    assert inc[0].rule_id == "correlation.site_window"


def test_two_sensors_outside_window_and_never_open_together_open_nothing(mini_registry):
    eng = RuleEngine(mini_registry, correlation_window_s=60)
    res = [
        run(eng, frame("site-a", 0, a_gas1=30)),
        run(eng, frame("site-a", 30, a_gas1=1)),  # cleared before the other one opens
        run(eng, frame("site-a", 61, a_gas1=1, a_temp1=65)),
    ]
    assert opened(res) == [("a-gas1", "high"), ("a-temp1", "high")]  # both hazards, 61 s apart
    assert incidents(res) == []


def test_hazards_open_at_the_same_time_make_one_incident_however_far_apart_they_opened(mini_registry):
    """The slow tailings case: alarms that develop over hours are still one situation while they last."""
    eng = RuleEngine(mini_registry, correlation_window_s=300)
    hour = 3600
    res = [
        run(eng, frame("site-a", 0, a_gas1=30, a_temp1=20)),
        run(eng, frame("site-a", 2 * hour, a_gas1=30, a_temp1=65)),  # the first is still open
        run(eng, frame("site-a", 3 * hour, a_gas1=30, a_temp1=65, a_o2=18)),  # a third joins
    ]
    inc = incidents(res)
    assert [i.status for i in inc] == ["open", "update"]
    assert inc[0].rule_id == "correlation.site_coactive" and len(inc[0].hazard_ids) == 2
    assert inc[0].severity == "yellow" and len(inc[1].hazard_ids) == 3


def test_a_restored_site_still_pairs_an_old_open_hazard(mini_registry):
    eng = RuleEngine(mini_registry, correlation_window_s=300)
    run(eng, frame("site-a", 0, a_gas1=30))
    snap = orjson.loads(orjson.dumps(eng.snapshot_site("site-a")))
    eng2 = RuleEngine(mini_registry, correlation_window_s=300)
    eng2.restore_site("site-a", snap)
    inc = incidents([run(eng2, frame("site-a", 7200, a_gas1=30, a_temp1=65))])
    assert [i.rule_id for i in inc] == ["correlation.site_coactive"]


def test_same_sensor_twice_is_not_a_pair(mini_registry):
    eng = RuleEngine(mini_registry)
    res = [run(eng, frame("site-a", t, a_gas1=v)) for t, v in [(0, 30), (1, 1), (2, 30)]]
    assert opened(res) == [("a-gas1", "high"), ("a-gas1", "high")]  # two hazards, one sensor
    assert incidents(res) == []


def test_other_site_does_not_pair(mini_registry):
    eng = RuleEngine(mini_registry)
    res = [run(eng, frame("site-a", 0, a_gas1=30)), run(eng, frame("site-b", 1, b_gas1=30))]
    assert opened(res) == [("a-gas1", "high"), ("b-gas1", "high")]  # within the window, on two sites
    assert incidents(res) == []


def test_high_high_alone_opens_incident_then_worse_and_resolved_after_the_quiet_period(mini_registry):
    eng = RuleEngine(mini_registry, incident_quiet_s=300)
    r1 = run(eng, frame("site-a", 0, a_gas1=55))  # H and HH at once
    r2 = run(eng, frame("site-a", 5, a_gas1=55, a_temp1=85))  # temperature joins the open incident
    r3 = run(eng, frame("site-a", 10, a_gas1=1, a_temp1=20))  # everything clears
    assert [i.status for i in r3.incidents][-1] == "update" and r3.incidents[-1].title.endswith("all clear")
    assert eng.advance(T0 + 10_000 + 299_000).incidents == []  # still quiet, not yet resolved
    r4 = eng.advance(T0 + 10_000 + 301_000)  # nothing sent: the site's clock resolves it
    inc = incidents([r1, r2, r3, r4])
    assert inc[0].status == "open" and inc[0].severity == "orange" and inc[0].rule_id == "correlation.severe_alone"
    assert {i.incident_id for i in inc} == {inc[0].incident_id}
    assert inc[-1].status == "closed" and inc[-1].open_hazard_ids == []
    assert inc[-1].closed_at == T0 + 10_000 + 300_000
    assert len(inc[-1].hazard_ids) == 4  # gas H, gas HH, temp H, temp HH
    assert any("linked" in t.what for t in inc[-1].timeline)


def test_new_hazard_after_close_opens_new_incident(mini_registry):
    eng = RuleEngine(mini_registry, incident_quiet_s=0)
    first = incidents([run(eng, frame("site-a", 0, a_gas1=55)), run(eng, frame("site-a", 5, a_gas1=1))])
    second = incidents([run(eng, frame("site-a", 10, a_gas1=55))])
    assert first[-1].status == "closed" and second[0].status == "open"
    assert second[0].incident_id != first[0].incident_id


def test_a_hazard_back_within_the_quiet_period_rejoins_the_same_incident(mini_registry):
    eng = RuleEngine(mini_registry, incident_quiet_s=300)
    first = incidents([run(eng, frame("site-a", 0, a_gas1=55)), run(eng, frame("site-a", 5, a_gas1=1))])
    back = incidents([run(eng, frame("site-a", 200, a_gas1=55))])  # 195 s later: the same situation
    assert {i.status for i in back} == {"update"} and {i.incident_id for i in back} == {first[0].incident_id}
    assert len(back[-1].open_hazard_ids) == 2  # gas H and HH again
    run(eng, frame("site-a", 210, a_gas1=1))
    later = incidents([run(eng, frame("site-a", 600, a_gas1=55))])  # 390 s after the clear: a new one
    assert [i.status for i in later][:2] == ["closed", "open"]
    assert later[0].incident_id == first[0].incident_id and later[1].incident_id != first[0].incident_id
    assert later[0].closed_at == T0 + 210_000 + 300_000


def events(engine, f):
    r = run(engine, f)
    return [e.model_dump() for e in r.hazards + r.incidents]


def test_snapshot_restore_continues_exactly(mini_registry):
    """A worker restarted from a checkpoint emits what an uninterrupted one would."""
    script = [
        frame("site-a", 0, a_gas1=30),
        frame("site-a", 5, a_gas1=55, a_temp1=61),
        frame("site-a", 9, a_gas1=45),
        frame("site-a", 12, a_gas1=1, a_temp1=20),
    ]
    whole = RuleEngine(mini_registry, incident_quiet_s=0)
    expected = [e for f in script for e in events(whole, f)]
    assert any(e.get("status") == "closed" for e in expected)

    first = RuleEngine(mini_registry, incident_quiet_s=0)
    got = [e for f in script[:2] for e in events(first, f)]
    snap = orjson.loads(orjson.dumps(first.snapshot_site("site-a")))  # through JSON, as on the topic
    second = RuleEngine(mini_registry, incident_quiet_s=0)
    second.restore_site("site-a", snap)
    assert events(second, script[1]) == []  # a redelivered frame is recognised as already evaluated
    got += [e for f in script[2:] for e in events(second, f)]
    assert got == expected


def test_title_and_summary_describe_the_situation_now_not_the_first_hazard(mini_registry):
    eng = RuleEngine(mini_registry, correlation_window_s=300, incident_quiet_s=0)
    r1 = run(eng, frame("site-a", 0, a_gas1=30, a_temp1=20))  # gas high (yellow) alone: no incident
    r2 = run(eng, frame("site-a", 60, a_gas1=30, a_temp1=65))  # temperature high pairs with it
    r3 = run(eng, frame("site-a", 70, a_gas1=55, a_temp1=65))  # gas high-high (orange) joins
    r4 = run(eng, frame("site-a", 80, a_gas1=1, a_temp1=65))  # gas clears, temperature still high
    r5 = run(eng, frame("site-a", 90, a_gas1=1, a_temp1=20))  # all clear
    inc = incidents([r1, r2, r3, r4, r5])
    assert len(inc) == 5
    site = mini_registry.sites["site-a"].name
    assert [i.status for i in inc] == ["open", "update", "update", "update", "closed"]
    assert inc[0].title == f"{site}: high combustible_gas at a-gas1 and 1 more sensor"
    assert inc[0].summary.startswith("yellow: 2 hazards open on 2 sensors, 2 linked in all; worst high combustible_gas")
    assert "correlation.site_window" in inc[0].summary
    # The worst open hazard leads once it is there, and the counts follow.
    assert inc[1].title == f"{site}: high_high combustible_gas at a-gas1 and 1 more sensor"
    assert inc[1].summary.startswith("orange: 3 hazards open on 2 sensors, 3 linked in all")
    # Gas cleared (high, then high-high): the temperature alone is open (severity never silently goes down).
    assert inc[3].title == f"{site}: high temperature at a-temp1"
    assert inc[3].summary.startswith("orange: 1 hazard open on 1 sensor, 3 linked in all; worst high temperature")
    assert inc[4].title == f"{site}: high_high combustible_gas at a-gas1 and 1 more sensor — all clear"
    assert inc[4].summary.startswith("orange: all clear, 3 hazards on 2 sensors were linked")
