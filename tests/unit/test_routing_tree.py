"""The routing tree: every matcher, nesting, `continue`, inherited settings, routes from another
file, and errors that name the file (the included one too), the line and the field."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from alerts.routing import LiveRouting, RoutingError, facts_of, load_routing, route, route_matches
from rules.models import TimelineEntry

from .test_routing import incident

API = "http://alerts.test"
DEPTS = """\
departments:
  ent: {name: Enterprise, webhook: "http://x/ent"}
  county: {name: County, webhook: "http://x/county"}
  city: {name: City, webhook: "http://x/city"}
  prov: {name: Province, webhook: "http://x/prov"}
  fire: {name: Fire, webhook: "http://x/fire"}
  mines: {name: Mines, webhook: "http://x/mines"}
  watch: {name: Close-watch desk, webhook: "http://x/watch"}
"""
TREE = (
    """\
ack_minutes: {red: 5, orange: 15, yellow: 30, blue: 60}
send_resolved: true
"""
    + DEPTS
    + """\
routes:
  - region_prefix: "32"
    departments: [ent, county]
    routes:
      - min_severity: yellow
        region_prefix: ["3205", "3206"]
        departments: [city]
        continue: true
      - severities: [orange, red]
        ack_minutes: {orange: 10}
        send_resolved: false
        departments: [prov]
        routes:
          - {sectors: [hazchem], departments: [fire]}
          - {sectors: [hazchem, mine], departments: [mines]}
      - {supervision_classes: [C, D], departments: [watch]}
  - {kinds: [interlock_failed], departments: [fire], continue: true}
  - {rule_ids: [correlation.severe_alone], departments: [prov]}
  - {sectors: [mine], departments: [mines]}
"""
)


def load(tmp_path: Path, text: str = TREE, name: str = "routing.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_routing(path, alerts_api=API)


def facts(severity="blue", sector="hazchem", region="320583", cls=None, rule="r", kinds=()):
    inc = incident(severity, sector, region).model_copy(
        update={"rule_id": rule, "timeline": [TimelineEntry(ts=1, what=f"{k} sensor-1 3 %LEL") for k in kinds]}
    )
    return facts_of(inc, cls)


def test_parent_departments_add_up_along_the_path(tmp_path):
    tree = load(tmp_path)
    assert route(facts("blue"), tree) == ["ent", "county"]
    assert route(facts("yellow"), tree) == ["ent", "county", "city"]
    assert route(facts("yellow", region="320102"), tree) == ["ent", "county"]  # not a listed city


def test_continue_false_stops_the_siblings(tmp_path):
    tree = load(tmp_path)
    # orange hazchem: the province route matches and has no `continue`, so the class route after it
    # is not tried; inside it, the first child (fire) stops the second (mines).
    assert route(facts("orange", cls="D"), tree) == ["ent", "county", "city", "prov", "fire"]
    assert route(facts("orange", sector="mine", cls="D"), tree) == ["ent", "county", "city", "prov", "mines"]
    # blue, class D: the province route does not match, the class route is reached.
    assert route(facts("blue", cls="D"), tree) == ["ent", "county", "watch"]
    # The top-level region route has no `continue`: a matching incident never reaches the routes
    # after it; one from another province does.
    assert route(facts("red", region="110105", kinds=["interlock_failed"]), tree) == ["fire"]


def test_every_matcher(tmp_path):
    tree = load(tmp_path)
    elsewhere = "110105"
    assert route(facts(region=elsewhere, kinds=["interlock_failed", "high"]), tree) == ["fire"]
    assert route(facts(region=elsewhere, kinds=["high"]), tree) == []
    assert route(facts(region=elsewhere, rule="correlation.severe_alone"), tree) == ["prov"]
    # continue: true on the kinds route lets the rule route add its department too
    both = route(facts(region=elsewhere, rule="correlation.severe_alone", kinds=["interlock_failed"]), tree)
    assert both == ["fire", "prov"]
    assert route(facts(region=elsewhere, sector="mine"), tree) == ["mines"]
    assert route(facts("blue", cls="B"), tree) == ["ent", "county"]  # supervision class not C/D
    assert route(facts("blue", cls=None), tree) == ["ent", "county"]  # unknown enterprise: no class


def test_settings_are_inherited_and_overridden(tmp_path):
    tree = load(tmp_path)
    got = {
        m.department: (m.ack_minutes.orange, m.ack_minutes.red, m.send_resolved)
        for m in route_matches(facts("orange"), tree)
    }
    assert got == {
        "ent": (15, 5, True),
        "county": (15, 5, True),
        "city": (15, 5, True),
        "prov": (10, 5, False),  # its own override
        "fire": (10, 5, False),  # inherited from the province route
    }


def test_first_appearance_wins(tmp_path):
    text = (
        DEPTS
        + "routes:\n  - {departments: [ent], continue: true}\n  - {departments: [ent, county], send_resolved: false}\n"
    )
    matches = route_matches(facts(), load(tmp_path, text))
    assert [(m.department, m.send_resolved) for m in matches] == [("ent", True), ("county", False)]


def test_routes_file_brings_child_routes_and_departments(tmp_path):
    (tmp_path / "counties.yaml").write_text(
        "departments:\n"
        "  county-320583: {name: Kunshan, webhook: 'http://x/ks', level: county, region: '320583'}\n"
        "routes:\n"
        "  - {region_prefix: '320583', departments: [county-320583]}\n"
        "  - {region_prefix: '320102', departments: [county]}\n",
        encoding="utf-8",
    )
    text = DEPTS + "routes:\n  - region_prefix: '32'\n    departments: [ent]\n    routes_file: counties.yaml\n"
    tree = load(tmp_path, text)
    assert route(facts(region="320583"), tree) == ["ent", "county-320583"]
    assert route(facts(region="320102"), tree) == ["ent", "county"]
    assert tree.departments["county-320583"].level == "county"


def test_errors_in_a_routes_file_name_that_file_and_line(tmp_path):
    (tmp_path / "counties.yaml").write_text(
        "departments:\n"
        "  ent: {name: Again, webhook: 'http://x/e'}\n"
        "routes:\n"
        "  - {region_prefix: '320583', departments: [nobody]}\n"
        "  - {region_prefix: '32-05', departments: [county]}\n",
        encoding="utf-8",
    )
    text = DEPTS + "routes:\n  - {departments: [ent], routes_file: counties.yaml}\n"
    with pytest.raises(RoutingError) as info:
        load(tmp_path, text)
    sub = str((tmp_path / "counties.yaml").resolve())
    message = str(info.value)
    assert f"{sub}:5: routes[1].region_prefix" in message
    with pytest.raises(RoutingError) as info:
        load(tmp_path, text.replace("counties.yaml", "missing.yaml"))
    assert "missing.yaml" in str(info.value) and "cannot read" in str(info.value)
    (tmp_path / "counties.yaml").write_text(
        "departments:\n  ent: {name: Again, webhook: 'http://x/e'}\nroutes:\n  - {departments: [nobody]}\n",
        encoding="utf-8",
    )
    with pytest.raises(RoutingError) as info:
        load(tmp_path, text)
    lines = str(info.value).splitlines()
    assert f"{sub}:2: departments.ent: department 'ent' is defined in" in lines[0]
    assert any(line.startswith(f"{sub}:4: routes[0].departments[0]: department 'nobody'") for line in lines)


def test_nested_errors_name_the_nested_field_and_line(tmp_path):
    text = TREE.replace("ack_minutes: {orange: 10}", "ack_minutes: {orange: -1}").replace(
        "{supervision_classes: [C, D]", "{supervision_classes: [E]"
    )
    with pytest.raises(RoutingError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert ":20: routes[0].routes[1].ack_minutes.orange" in message
    assert ":26: routes[0].routes[2].supervision_classes[0]" in message
    undefined = TREE.replace(
        "departments: [mines]}\n      - {supervision", "departments: [mine-bureau]}\n      - {supervision"
    )
    with pytest.raises(RoutingError) as info:
        load(tmp_path, undefined)
    assert ":25: routes[0].routes[1].routes[1].departments[0]: department 'mine-bureau'" in str(info.value)


def _touch(path: Path, text: str, step: int) -> None:
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + step * 1_000_000_000))  # a visibly newer file


def test_hot_reload_swaps_a_valid_file_and_keeps_the_old_one_on_errors(tmp_path, caplog):
    path = tmp_path / "routing.yaml"
    path.write_text(TREE, encoding="utf-8")
    live = LiveRouting(path, API)
    assert not live.reload_if_changed()  # unchanged
    _touch(path, TREE.replace("departments: [watch]", "departments: [watch, fire]"), 1)
    assert live.reload_if_changed()
    assert route(facts("blue", cls="D"), live.current) == ["ent", "county", "watch", "fire"]
    with caplog.at_level(logging.ERROR, logger="alerts.routing"):
        _touch(path, TREE.replace("min_severity: yellow", "min_severity: amber"), 2)
        assert not live.reload_if_changed()
    assert route(facts("blue", cls="D"), live.current) == ["ent", "county", "watch", "fire"]  # the old one stays
    assert f"{path}:15: routes[0].routes[0].min_severity" in caplog.text


def test_hot_reload_sees_a_changed_routes_file(tmp_path):
    sub = tmp_path / "more.yaml"
    sub.write_text("routes:\n  - {departments: [county]}\n", encoding="utf-8")
    path = tmp_path / "routing.yaml"
    path.write_text(DEPTS + "routes:\n  - {departments: [ent], routes_file: more.yaml}\n", encoding="utf-8")
    live = LiveRouting(path, API)
    assert route(facts(), live.current) == ["ent", "county"]
    _touch(sub, "routes:\n  - {departments: [city]}\n", 1)
    assert live.reload_if_changed()
    assert route(facts(), live.current) == ["ent", "city"]


def test_channels_of_a_department(tmp_path):
    text = (
        "departments:\n"
        "  a: {name: A, webhook: 'http://x/a'}\n"
        "  b: {name: B, email: [duty@b.example]}\n"
        "  c: {name: C, webhook: 'http://x/c', email: [duty@c.example, chief@c.example]}\n"
        "routes:\n  - {departments: [a, b, c]}\n"
    )
    tree = load(tmp_path, text)
    assert [tree.channels_of(d) for d in ("a", "b", "c", "gone")] == [
        ["webhook"],
        ["email"],
        ["webhook", "email"],
        ["webhook"],
    ]
    with pytest.raises(RoutingError) as info:
        load(tmp_path, text.replace("{name: B, email: [duty@b.example]}", "{name: B}"))
    assert ":3: departments.b: a department needs at least one channel" in str(info.value)
    with pytest.raises(RoutingError) as info:
        load(tmp_path, text.replace("duty@b.example", "duty-at-b"))
    assert ":3: departments.b.email[0]" in str(info.value)
