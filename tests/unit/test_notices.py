"""Maintenance notices: a site's instrument hazards gathered into one notice, never an incident."""

from __future__ import annotations

import numpy as np
import orjson

from rules.correlation import SiteInfo
from rules.engine import RuleEngine
from rules.models import HazardEvent
from rules.notices import UPDATE_MIN_MS, SiteNotice, observe, tick
from rules.replay import replay_file
from sensors.schema import encode

from .rules_helpers import T0, frame
from .test_rule_kinds import FAULT, GAS, OFFLINE, catalog, feed

INFO = SiteInfo("site-a", "Tank farm A", "91320000000000000X", "Acme", "320583", "hazchem")


def hz(event: str, hazard_id: str, sensor: str, kind: str, t_s: float, start_s: float | None = None, **kw):
    ts = T0 + int(t_s * 1000)
    return HazardEvent(
        hazard_id=hazard_id,
        event=event,
        kind=kind,
        level=1,
        severity=kw.get("severity", "blue"),
        rule_id="hazchem.x",
        site_id="site-a",
        sensor_id=sensor,
        enterprise_id=INFO.enterprise_id,
        region=INFO.region,
        sector=INFO.sector,
        area="t1",
        quantity="site" if not sensor else "combustible_gas",
        unit="",
        threshold=0.0,
        value=None,
        peak=None,
        start=T0 + int((t_s if start_s is None else start_s) * 1000),
        ts=ts,
        flapping=kw.get("flapping", False),
    )


def run(state: SiteNotice, *events: HazardEvent) -> list:
    return [n for h in events for n in observe(state, h, INFO)]


def test_instrument_hazards_of_a_site_gather_into_one_notice_that_closes_when_all_clear():
    s = SiteNotice()
    out = run(
        s,
        hz("open", "h1", "a-gas1", "offline", 0),
        hz("open", "h2", "a-temp1", "sensor_fault", 100),
        hz("clear", "h1", "a-gas1", "offline", 200),
        hz("clear", "h2", "a-temp1", "sensor_fault", 300),
    )
    assert [n.status for n in out] == ["open", "update", "update", "closed"]
    assert len({n.notice_id for n in out}) == 1 and out[0].notice_id.startswith("NOTICE-")
    assert [f.sensor_id for f in out[1].faults] == ["a-gas1", "a-temp1"]
    assert [f.sensor_id for f in out[2].faults] == ["a-temp1"] and out[2].faults[0].since == T0 + 100_000
    assert out[-1].faults == [] and out[-1].closed_at == T0 + 300_000 and out[-1].hazard_ids == ["h1", "h2"]
    assert "all clear" in out[-1].title and "offline at a-gas1" in out[0].title
    # the next problem is a new notice, with its own id
    again = run(s, hz("open", "h3", "a-gas1", "stuck", 400))
    assert again[0].status == "open" and again[0].notice_id != out[0].notice_id


def test_process_hazards_and_suppressed_events_make_no_notice():
    s = SiteNotice()
    assert run(s, hz("open", "h1", "a-gas1", "high", 0), hz("suppressed", "", "a-gas1", "offline", 1)) == []
    assert s.notice_id is None


def test_updates_are_held_to_one_per_interval_and_go_out_at_its_end():
    s = SiteNotice()
    joins = [hz("open", f"h{i}", f"s{i}", "offline", i) for i in range(5)]  # five sensors within 5 s
    out = run(s, *joins)
    assert [n.status for n in out] == ["open"] and s.pending
    # the engine's timer, on the site's clock: nothing before the interval ends, then one update with all five
    assert tick(s, T0 + UPDATE_MIN_MS - 1, INFO) == []
    (update,) = tick(s, T0 + UPDATE_MIN_MS + 5000, INFO)
    assert update.status == "update" and update.updated_at == T0 + UPDATE_MIN_MS and len(update.faults) == 5
    assert tick(s, T0 + 10 * UPDATE_MIN_MS, INFO) == []  # nothing held any more
    # a held change is also flushed by the next hazard past the interval, stamped at the interval's end
    run(s, hz("clear", "h0", "s0", "offline", 70))
    out = run(s, hz("clear", "h1", "s1", "offline", 200))
    assert [(n.status, n.updated_at, len(n.faults)) for n in out] == [
        ("update", T0 + 2 * UPDATE_MIN_MS, 4),
        ("update", T0 + 200_000, 3),
    ]
    # the close is never held
    out = run(s, *[hz("clear", f"h{i}", f"s{i}", "offline", 201 + i) for i in range(2, 5)])
    assert [n.status for n in out] == ["closed"]


def test_a_site_offline_notice_says_the_whole_site_and_takes_its_colour():
    s = SiteNotice()
    (n,) = run(s, hz("open", "h1", "", "site_offline", 0, severity="yellow"))
    assert n.severity == "yellow" and "whole site is offline" in n.title and n.faults[0].sensor_id == ""


def test_the_state_round_trips_through_a_checkpoint():
    s = SiteNotice()
    run(s, hz("open", "h1", "a-gas1", "offline", 0), hz("open", "h2", "a-temp1", "stuck", 5))
    back = SiteNotice.from_dict(orjson.loads(orjson.dumps(s.to_dict())))
    assert back == s
    tail = [hz("clear", "h1", "a-gas1", "offline", 90), hz("clear", "h2", "a-temp1", "stuck", 95)]
    assert run(back, *tail) == run(s, *tail)


# --- in the engine ---------------------------------------------------------------------------------
def test_the_engine_gives_one_notice_for_a_site_with_an_offline_and_a_faulty_sensor(tmp_path, mini_registry):
    eng = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAULT, OFFLINE))
    events, notices, incidents = [], [], []
    for t in range(80):
        b = eng.new_batch()
        readings = {"a-temp1": 20.0, "a-o2": 20.9, "a-fan": 1.0, "a-gas1": 130.0 if 5 <= t < 20 else 1.0}
        if t >= 8:
            readings.pop("a-temp1")  # silent from t = 8 s
        b.add(frame("site-a", t, **{k.replace("-", "_"): v for k, v in readings.items()}))
        for r in (eng.process(b.build()), eng.advance(T0 + t * 1000)):
            events += r.hazards
            notices += r.notices
            incidents += r.incidents
    kinds = {(h.kind, h.event) for h in events}
    assert {("sensor_fault", "open"), ("offline", "open"), ("sensor_fault", "clear")} <= kinds
    assert incidents == []  # instrument health never opens an incident
    assert len({n.notice_id for n in notices}) == 1
    # the offline sensor joined and the fault cleared within a minute of the open: one update, at its end
    assert [(n.status, [f.kind for f in n.faults]) for n in notices] == [
        ("open", ["sensor_fault"]),
        ("update", ["offline"]),
    ]
    assert notices[1].updated_at == notices[0].updated_at + 60_000
    # checkpoint and restore: the notice carries on in a fresh engine
    fresh = RuleEngine(mini_registry, catalog(tmp_path, GAS, FAULT, OFFLINE, name="d"))
    fresh.restore_site("site-a", orjson.loads(orjson.dumps(eng.snapshot_site("site-a"))))
    assert fresh.notices["site-a"] == eng.notices["site-a"]
    back = fresh.process(_one(fresh, frame("site-a", 81, a_temp1=20.0, a_gas1=1.0)))
    assert [n.status for n in back.notices][-1] == "closed" and back.notices[-1].notice_id == notices[0].notice_id


def _one(engine, f):
    b = engine.new_batch()
    b.add(f)
    return b.build()


def test_replay_writes_notices_and_they_do_not_depend_on_batch_size(tmp_path, mini_registry):
    src = tmp_path / "in.jsonl"
    frames = [frame("site-a", t, a_gas1=130.0 if 3 <= t < 12 else 1.0, a_temp1=20.0) for t in range(20)]
    src.write_bytes(b"".join(encode(f) + b"\n" for f in frames))
    cat = catalog(tmp_path, GAS, FAULT)
    outs = []
    for size in (1, 4, 1000):
        out = tmp_path / f"out{size}.jsonl"
        report = replay_file(src, mini_registry, out, catalog=cat, batch_size=size)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    events = [orjson.loads(line) for line in outs[0].splitlines()]
    notices = [e for e in events if e["type"] == "notice"]
    assert [n["status"] for n in notices] == ["open", "closed"] and report.notices == 2
    assert not [e for e in events if e["type"] == "incident"]


# --- start-up grace ----------------------------------------------------------------------------------
def test_the_start_up_grace_delays_offline_timers_but_not_what_they_say(tmp_path, mini_registry):
    def engine(name):
        eng = RuleEngine(mini_registry, catalog(tmp_path, OFFLINE, name=name))
        feed(eng, [(t, {"a-gas1": 1.0, "a-temp1": 20.0, "a-o2": 20.9, "a-fan": 1.0}) for t in range(3)])
        return eng

    plain, graced = engine("p"), engine("g")
    graced.hold_offline("site-a", T0 + 60_000)
    clock = np.full(len(plain.site_ids), T0 + 30_000, dtype=np.int64)
    without = plain.advance(int(clock.max()), clock).hazards
    assert [h.kind for h in without] == ["site_offline"]
    assert graced.advance(int(clock.max()), clock).hazards == []  # inside the grace: no timer fires
    clock[:] = T0 + 61_000
    late = graced.advance(int(clock.max()), clock).hazards
    # after it: the same hazard (same id, same start) as without a grace, only found later
    assert [(h.hazard_id, h.kind, h.start) for h in late] == [(h.hazard_id, h.kind, h.start) for h in without]
