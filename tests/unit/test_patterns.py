"""Correlation rules as data: each kind and scope, out-of-order input, absence on an idle site, file errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from rules.engine import RuleEngine
from rules.patterns import (
    CORRELATION_DIR,
    CorrelationRule,
    CorrelationRuleError,
    Entry,
    answered,
    arm,
    fires,
    load_correlation_rules,
    rule_severity,
    scope_key,
)

from .rules_helpers import T0, frame, run

MIN = 60_000
HOUR = 3_600_000
TEXT = "text: {zh: 测试, en: test}\naction: {zh: 处置, en: act}\nbasis: test\n"


def rule(src: str) -> CorrelationRule:
    return CorrelationRule.model_validate(yaml.safe_load(src + TEXT))


def entry(
    id: str,
    quantity: str,
    start: int,
    *,
    sensor: str | None = None,
    area: str = "a1",
    severity: str = "yellow",
    cleared_at: int | None = None,
    site: str = "s1",
    region: str = "320506",
    kind: str = "high",
) -> Entry:
    return Entry(
        id=id,
        site_id=site,
        sensor_id=sensor or f"{site}-{quantity}",
        area=area,
        quantity=quantity,
        kind=kind,
        rule_id=f"x.{quantity}",
        severity=severity,
        sector="mine",
        enterprise_id="E1",
        region=region,
        start=start,
        cleared_at=cleared_at,
    )


FLOOD = rule("""
id: t.flood
kind: coactive
scope: site
all_of: [{quantity: [rain]}, {quantity: [pond]}, {quantity: [beach]}]
severity: worst+1
""")


def ids(got):
    return None if got is None else sorted(e.id for e in got)


def test_coactive_all_of_fires_when_the_last_opens_however_far_apart_they_opened():
    rain, pond, beach = entry("r", "rain", 0), entry("p", "pond", 2 * HOUR), entry("b", "beach", 5 * HOUR)
    assert fires(FLOOD, [rain, pond], pond, 300_000) is None  # two of three
    assert ids(fires(FLOOD, [rain, pond, beach], beach, 300_000)) == ["b", "p", "r"]


def test_coactive_needs_them_open_together():
    rain = entry("r", "rain", 0, cleared_at=HOUR)
    pond, beach = entry("p", "pond", 2 * HOUR), entry("b", "beach", 3 * HOUR)
    assert fires(FLOOD, [rain, pond, beach], beach, 300_000) is None


def test_coactive_at_least_n_of_the_matchers():
    two_of_three = rule("""
id: t.two
kind: coactive
scope: site
all_of: [{quantity: [rain]}, {quantity: [pond]}, {quantity: [beach]}]
count: 2
""")
    rain, beach = entry("r", "rain", 0), entry("b", "beach", HOUR)
    assert ids(fires(two_of_three, [rain, beach], beach, 0)) == ["b", "r"]


def test_one_hazard_cannot_meet_two_matchers():
    both = rule("""
id: t.both
kind: coactive
scope: site
all_of: [{quantity: [gas]}, {min_severity: yellow}]
""")
    gas = entry("g", "gas", 0)
    assert fires(both, [gas], gas, 0) is None
    temp = entry("t", "temp", 1)
    assert ids(fires(both, [gas, temp], temp, 0)) == ["g", "t"]


WINDOW = rule("""
id: t.window
kind: window
scope: site
any_of: [{}]
count: 2
distinct: sensors
window_s: 600
""")


def test_window_pairs_inside_and_not_outside():
    a = entry("a", "gas", 0, cleared_at=MIN)
    assert ids(fires(WINDOW, [a, entry("b", "temp", 9 * MIN)], entry("b", "temp", 9 * MIN), 0)) == ["a", "b"]
    late = entry("c", "temp", 11 * MIN)
    assert fires(WINDOW, [a, late], late, 0) is None


def test_window_pairs_a_hazard_that_arrives_after_a_later_one():
    """Out of order: the hazard that opened first is the one that arrives second."""
    later, earlier = entry("b", "temp", 9 * MIN), entry("a", "gas", 0)
    assert ids(fires(WINDOW, [later, earlier], earlier, 0)) == ["a", "b"]


def test_window_without_window_s_takes_the_deployment_window():
    default = rule("id: t.d\nkind: window\nscope: site\nany_of: [{}]\ncount: 2\ndistinct: sensors\n")
    a, b = entry("a", "gas", 0), entry("b", "temp", 4 * MIN)
    assert fires(default, [a, b], b, 3 * MIN) is None
    assert ids(fires(default, [a, b], b, 5 * MIN)) == ["a", "b"]


def test_count_needs_n_within_one_window_not_spread_over_two():
    three = rule("""
id: t.count
kind: count
scope: site
any_of: [{quantity: [disp]}]
count: 3
distinct: sensors
window_s: 3600
""")
    e = [entry(f"d{i}", "disp", t, sensor=f"d{i}") for i, t in enumerate([0, 50 * MIN, 100 * MIN])]
    assert fires(three, e, e[2], 0) is None  # every pair within an hour, the three are not
    e.append(entry("d3", "disp", 55 * MIN, sensor="d3"))
    assert ids(fires(three, e, e[3], 0)) == ["d0", "d1", "d3"]


def test_count_distinct_sensors_counts_a_sensor_once():
    three = rule("id: t.c\nkind: count\nscope: site\nany_of: [{}]\ncount: 2\ndistinct: sensors\nwindow_s: 600\n")
    a1, a2 = entry("a1", "gas", 0, sensor="g"), entry("a2", "gas", MIN, sensor="g")
    assert fires(three, [a1, a2], a2, 0) is None


SEQ = rule("""
id: t.seq
kind: sequence
scope: site
first: {quantity: [level]}
then: {quantity: [gas]}
window_s: 1800
""")


def test_sequence_in_order_within_the_window():
    level, gas = entry("l", "level", 0), entry("g", "gas", 20 * MIN)
    assert ids(fires(SEQ, [level, gas], gas, 0)) == ["g", "l"]
    assert fires(SEQ, [level, entry("g2", "gas", 40 * MIN)], entry("g2", "gas", 40 * MIN), 0) is None


def test_sequence_the_other_way_round_is_not_the_sequence():
    gas, level = entry("g", "gas", 0), entry("l", "level", 10 * MIN)
    assert fires(SEQ, [gas, level], level, 0) is None


def test_sequence_fires_when_the_first_arrives_late():
    gas, level = entry("g", "gas", 20 * MIN), entry("l", "level", 0)  # level opened first, arrives second
    assert ids(fires(SEQ, [gas, level], level, 0)) == ["g", "l"]


def test_area_scope_keeps_areas_apart():
    fire = rule("""
id: t.area
kind: coactive
scope: area
all_of: [{quantity: [hopper]}, {quantity: [dp]}]
""")
    hopper, dp_other = entry("h", "hopper", 0, area="BF1"), entry("d", "dp", MIN, area="BF2")
    assert fires(fire, [hopper, dp_other], dp_other, 0) is None
    dp = entry("d2", "dp", MIN, area="BF1")
    assert ids(fires(fire, [hopper, dp_other, dp], dp, 0)) == ["d2", "h"]


def test_absence_arms_and_is_answered_by_a_clear_or_a_missing_hazard():
    unhandled = rule(
        "id: t.abs\nkind: absence\nscope: site\nfirst: {quantity: [hopper]}\nmissing: clear\nwindow_s: 600\n"
    )
    h = entry("h", "hopper", 0)
    p = arm(unhandled, h, 0)
    assert p is not None and p.deadline == 600_000
    cleared = Entry(**{**h.to_dict(), "cleared_at": 5 * MIN})
    assert answered(unhandled, p, cleared, "clear")
    assert not answered(unhandled, p, Entry(**{**h.to_dict(), "cleared_at": 11 * MIN}), "clear")
    fan = rule(
        "id: t.fan\nkind: absence\nscope: site\nfirst: {quantity: [gas]}\nmissing: {quantity: [fan]}\nwindow_s: 60\n"
    )
    g = entry("g", "gas", 0)
    p = arm(fan, g, 0)
    assert answered(fan, p, entry("f", "fan", 30_000), "open")
    assert not answered(fan, p, entry("f", "fan", 90_000), "open")
    # Out of order: the answer arrived before the first; nothing is armed.
    assert arm(fan, g, 0, [entry("f", "fan", 30_000)]) is None


def test_rule_severity_mapping():
    e = [entry("a", "gas", 0, severity="yellow"), entry("b", "temp", 0, severity="blue")]
    assert rule_severity(FLOOD, e) == "orange"  # worst+1
    assert rule_severity(FLOOD, [entry("r", "rain", 0, severity="red")]) == "red"  # never above red
    fixed = rule("id: t.f\nkind: coactive\nscope: site\nany_of: [{}]\nseverity: orange\n")
    assert rule_severity(fixed, e) == "orange"


def test_scope_keys():
    e = entry("a", "gas", 0, region="320506")
    assert [scope_key(s, e) for s in ("area", "site", "enterprise", "county", "city", "province")] == [
        "s1/a1",
        "s1",
        "E1",
        "320506",
        "320500",
        "320000",
    ]


# --- the hot path: the engine with rules from a file ------------------------------------------------
def engine_with(mini_registry, src: str) -> RuleEngine:
    rules = [CorrelationRule.model_validate(r) for r in yaml.safe_load(src)]
    return RuleEngine(mini_registry, correlation_rules=rules)


ABSENCE = """
- id: t.gas_unhandled
  kind: absence
  scope: site
  first: {quantity: [combustible_gas]}
  missing: clear
  window_s: 600
  severity: orange
  text: {zh: 可燃气体报警未处置, en: gas alarm not handled}
  action: {zh: 督促处置, en: make them act}
  basis: test
"""


def test_absence_fires_on_an_idle_site_by_its_clock(mini_registry):
    eng = engine_with(mini_registry, ABSENCE)
    assert run(eng, frame("site-a", 0, a_gas1=30)).incidents == []
    assert eng.advance(T0 + 590_000).incidents == []
    inc = eng.advance(T0 + 601_000).incidents  # nothing more was sent: the timer fires
    assert [(i.status, i.rule_id, i.severity) for i in inc] == [("open", "t.gas_unhandled", "orange")]
    assert inc[0].opened_at == T0 + 600_000 and len(inc[0].open_hazard_ids) == 1
    assert eng.advance(T0 + 700_000).incidents == []  # once


def test_absence_answered_in_time_never_fires(mini_registry):
    eng = engine_with(mini_registry, ABSENCE)
    run(eng, frame("site-a", 0, a_gas1=30))
    run(eng, frame("site-a", 100, a_gas1=1))
    assert eng.advance(T0 + 3_600_000).incidents == []


def test_absence_waiting_survives_a_checkpoint(mini_registry):
    eng = engine_with(mini_registry, ABSENCE)
    run(eng, frame("site-a", 0, a_gas1=30))
    snap = orjson.loads(orjson.dumps(eng.snapshot_site("site-a")))
    eng2 = engine_with(mini_registry, ABSENCE)
    eng2.restore_site("site-a", snap)
    assert [i.rule_id for i in eng2.advance(T0 + 601_000).incidents] == ["t.gas_unhandled"]


def test_a_rule_matching_an_open_incident_raises_it_and_names_it(mini_registry):
    src = """
- id: t.gas_and_heat
  kind: coactive
  scope: area
  all_of: [{quantity: [combustible_gas]}, {quantity: [temperature]}]
  severity: red
  text: {zh: 气体与温度, en: gas and heat}
  action: {zh: 处置, en: act}
  basis: test
- id: t.pair
  kind: coactive
  scope: site
  any_of: [{}]
  count: 2
  distinct: sensors
  text: {zh: 两个, en: two}
  action: {zh: 处置, en: act}
  basis: test
"""
    eng = engine_with(mini_registry, src)
    run(eng, frame("site-a", 0, a_gas1=10, a_o2=18, a_temp1=20))
    res = run(eng, frame("site-a", 60, a_gas1=10, a_o2=18, a_temp1=20))  # o2 low stays open
    res = run(eng, frame("site-a", 120, a_gas1=30, a_o2=18, a_temp1=20))
    opened = [i for i in res.incidents if i.status == "open"]
    assert [(i.rule_id, i.severity) for i in opened] == [("t.pair", "yellow")]
    res = run(eng, frame("site-a", 180, a_gas1=30, a_o2=18, a_temp1=65))
    (upd,) = res.incidents
    assert upd.status == "update" and upd.rule_id == "t.gas_and_heat" and upd.severity == "red"
    assert any("t.gas_and_heat" in t.what for t in upd.timeline)
    assert "gas and heat" in upd.summary


# --- the shipped files -----------------------------------------------------------------------------
def test_shipped_rules_load_and_name_only_catalogue_rules():
    from rules.catalog import load_catalog

    catalog = load_catalog()
    ids = {r.id for f in catalog.sectors.values() for r in f.rules}
    rules = load_correlation_rules(CORRELATION_DIR, set(catalog.sectors), ids)
    kinds = {r.kind for r in rules}
    assert {"coactive", "window", "count", "sequence", "absence"} <= kinds
    assert all(r.text.zh and r.text.en and r.action.zh and r.basis for r in rules)


def test_file_errors_name_file_line_and_field(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text(
        "rules:\n"
        "  - id: t.one\n"
        "    kind: sequence\n"
        "    scope: site\n"
        "    first: {quantity: [a]}\n"
        "    window_s: 60\n"
        "    text: {zh: 一, en: one}\n"
        "    action: {zh: 一, en: one}\n"
        "    basis: test\n"
        "  - id: t.two\n"
        "    kind: coactive\n"
        "    scope: site\n"
        "    any_of: [{rule: [no.such_rule]}]\n"
        "    text: {zh: 二, en: two}\n"
        "    action: {zh: 二, en: two}\n"
        "    basis: test\n",
        encoding="utf-8",
    )
    with pytest.raises(CorrelationRuleError) as exc:
        load_correlation_rules(tmp_path, rule_ids={"x.y"})
    text = str(exc.value)
    assert f"{tmp_path / 'bad.yaml'}:2: rules[0]: a sequence rule needs" in text and "needs `then`" in text
    (tmp_path / "bad.yaml").write_text(
        "rules:\n  - id: t.two\n    kind: coactive\n    scope: site\n    any_of: [{rule: [no.such_rule]}]\n"
        "    text: {zh: 二, en: two}\n    action: {zh: 二, en: two}\n    basis: test\n",
        encoding="utf-8",
    )
    with pytest.raises(CorrelationRuleError) as exc:
        load_correlation_rules(tmp_path, rule_ids={"x.y"})
    assert f"{tmp_path / 'bad.yaml'}:5: rules[0].any_of[0].rule: no catalogue rule 'no.such_rule'" in str(exc.value)


def test_the_document_lists_every_shipped_hot_path_rule():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "correlation.md").read_text(encoding="utf-8")
    missing = [r.id for r in load_correlation_rules() if r.hot and f"`{r.id}`" not in doc]
    assert missing == []
