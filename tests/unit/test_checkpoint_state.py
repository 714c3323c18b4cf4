"""A site's checkpoint: what it leaves out restores the same, and many sites snapshot as one at a time."""

from __future__ import annotations

import orjson

from rules.engine import RuleEngine

from .rules_helpers import frame, run


def _through_json(snap: dict) -> dict:
    return orjson.loads(orjson.dumps(snap))


def test_idle_sensor_states_are_left_out_and_restore_the_same(mini_registry):
    eng = RuleEngine(mini_registry, correlation_window_s=300)
    run(eng, frame("site-a", 0, a_gas1=30, a_temp1=20))  # a-gas1 opens a hazard
    run(eng, frame("site-a", 60, a_gas1=1, a_temp1=20))  # and clears
    run(eng, frame("site-a", 120, a_gas1=1, a_temp1=65))  # a-temp1 opens one
    gas1 = eng.state[eng.index["a-gas1"]]
    assert gas1.idle()  # walked, so it has a state, but it is what a new one starts from
    snap = _through_json(eng.snapshot_site("site-a"))
    assert "a-temp1" in snap["sensors"]
    assert "a-gas1" not in snap["sensors"]
    assert set(snap["last"]) >= {"a-gas1", "a-temp1"}

    again = RuleEngine(mini_registry, correlation_window_s=300)
    again.restore_site("site-a", snap)
    later = [frame("site-a", t, a_gas1=v, a_temp1=w) for t, v, w in [(180, 1, 65), (240, 30, 65), (300, 1, 1)]]
    for f in later:
        a, b = run(eng, f), run(again, f)
        assert [h.to_json() for h in a.hazards] == [h.to_json() for h in b.hazards]
        assert [i.to_json() for i in a.incidents] == [i.to_json() for i in b.incidents]
    assert _through_json(again.snapshot_site("site-a")) == _through_json(eng.snapshot_site("site-a"))


def test_snapshot_of_many_sites_equals_one_site_at_a_time(mini_registry):
    eng = RuleEngine(mini_registry, correlation_window_s=300)
    run(eng, frame("site-a", 0, a_gas1=30, a_temp1=65), frame("site-b", 0, b_gas1=30))
    both = eng.snapshot_sites(["site-a", "site-b"])
    assert both["site-a"]["publisher"]["held"] and both["site-b"]["publisher"]["held"]
    assert _through_json(both) == {s: _through_json(eng.snapshot_site(s)) for s in ("site-a", "site-b")}
