"""Routing: which departments an incident reaches, and how a bad routing file is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.routing import RoutingError, all_routes, load_routing, route
from config.settings import PROJECT_ROOT
from rules.models import IncidentEvent

API = "http://127.0.0.1:18080"
SHIPPED = PROJECT_ROOT / "config" / "routing.yaml"


def incident(severity: str = "blue", sector: str = "hazchem", region: str = "320583") -> IncidentEvent:
    """An incident event with only the routing-relevant fields varied."""
    return IncidentEvent(
        incident_id="inc-1",
        status="open",
        severity=severity,
        rule_id="r",
        title="t",
        site_id="s",
        site_name="s",
        enterprise_id="e",
        enterprise_name="e",
        region=region,
        sector=sector,
        opened_at=1,
        updated_at=1,
        hazard_ids=["h"],
        open_hazard_ids=["h"],
        timeline=[],
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


SMALL = """\
ack_minutes: {red: 2, orange: 10, yellow: 20, blue: 45}
departments:
  county: {name: County, webhook: "${ALERTS_API}/inbox/county"}
  city-a: {name: City A, webhook: "${ALERTS_API}/inbox/city-a"}
  fire: {name: Fire, webhook: "https://fire.example/hook"}
  mines: {name: Mines, webhook: "${ALERTS_API}/inbox/mines"}
routes:
  - {sectors: ["*"], departments: [county], continue: true}
  - {sectors: ["*"], region_prefix: "3205", min_severity: yellow, departments: [city-a], continue: true}
  - {sectors: [hazchem, dust], min_severity: orange, departments: [fire, county], continue: true}
  - {sectors: [mine], min_severity: blue, departments: [mines], continue: true}
"""


@pytest.fixture
def small(tmp_path: Path):
    return load_routing(write(tmp_path, SMALL), alerts_api=API)


def test_every_severity_and_sector_reaches_catch_all_route(small):
    assert route(incident("blue", "steel", "110105"), small) == ["county"]


def test_region_prefix_matches_start_of_region_code(small):
    assert route(incident("yellow", region="320583"), small) == ["county", "city-a"]
    assert route(incident("yellow", region="320102"), small) == ["county"]
    assert route(incident("yellow", region="513205"), small) == ["county"]  # the prefix, not a substring


def test_min_severity_is_inclusive_and_ordered(small):
    assert route(incident("blue"), small) == ["county"]
    assert route(incident("orange", region="320102"), small) == ["county", "fire"]
    assert route(incident("red", region="320102"), small) == ["county", "fire"]


def test_sector_lists_select_routes(small):
    assert "fire" not in route(incident("red", "ammonia"), small)
    assert route(incident("blue", "mine"), small) == ["county", "mines"]


def test_union_keeps_first_appearance_order_without_repeats(small):
    # `county` is in two matching routes; it appears once, where it first appeared.
    assert route(incident("red", "dust", "320583"), small) == ["county", "city-a", "fire"]


def test_scope_incidents_route_by_their_scope_code(small):
    # A scope incident's region is its scope's code (city 320500, county 320583): region prefixes work unchanged.
    def scoped(region: str, scope: str):
        return incident("yellow", region=region).model_copy(update={"scope": scope, "scope_key": region, "site_id": ""})

    assert route(scoped("320500", "city"), small) == ["county", "city-a"]
    assert route(scoped("320583", "county"), small) == ["county", "city-a"]
    assert route(scoped("320100", "city"), small) == ["county"]


def test_alerts_api_placeholder_is_expanded(tmp_path: Path):
    routing = load_routing(write(tmp_path, SMALL), alerts_api="http://10.0.0.5:9000/")
    assert routing.departments["county"].webhook == "http://10.0.0.5:9000/inbox/county"
    assert routing.departments["fire"].webhook == "https://fire.example/hook"


def test_ack_minutes_come_from_the_file_with_defaults(small, tmp_path: Path):
    assert [small.ack_minutes_for(s) for s in ("red", "orange", "yellow", "blue")] == [2, 10, 20, 45]
    default = load_routing(write(tmp_path, SMALL.split("\n", 1)[1]), alerts_api=API)
    assert [default.ack_minutes_for(s) for s in ("red", "orange", "yellow", "blue")] == [5, 15, 30, 60]


def test_shipped_jiangsu_file_is_valid_and_points_at_the_demo_inbox():
    routing = load_routing(SHIPPED, alerts_api=API)
    for dept_id, dept in routing.departments.items():
        assert dept.webhook == f"{API}/inbox/{dept_id}"
    assert route(incident("blue", "hazchem", "320583"), routing) == ["enterprise-duty", "county-emergency"]
    assert route(incident("yellow", "steel", "320583"), routing) == [
        "enterprise-duty",
        "county-emergency",
        "suzhou-emergency",
    ]
    orange_chem = route(incident("orange", "hazchem", "320707"), routing)
    assert orange_chem == [
        "enterprise-duty",
        "county-emergency",
        "lianyungang-emergency",
        "js-emergency",
        "js-fire-rescue",
        "js-ecology-environment",
    ]
    assert "js-fire-rescue" not in route(incident("orange", "steel", "320707"), routing)
    red_mine = route(incident("red", "mine", "320324"), routing)
    for dept in ("xuzhou-emergency", "js-mine-safety", "js-natural-resources", "js-fire-rescue", "mem-duty"):
        assert dept in red_mine
    assert route(incident("red", "hazchem", "110105"), routing) == []  # another province: not ours


def test_every_department_of_the_shipped_file_is_reachable():
    routing = load_routing(SHIPPED, alerts_api=API)
    used = {d for _, r in all_routes(routing) for d in r.departments}
    assert used == set(routing.departments)


# --- bad files: the error names the file, the line and the field ------------------------------------


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(RoutingError) as info:
        load_routing(path, alerts_api=API)
    message = str(info.value)
    assert str(path) in message
    return message


def test_unknown_key_is_an_error_naming_the_field_and_line(tmp_path: Path):
    text = SMALL.replace("departments: [mines], continue: true}", "departments: [mines], colour: red}")
    message = error_of(tmp_path, text)
    assert "routes[3].colour" in message
    assert ":11:" in message  # the line of the fourth route


def test_bad_severity_names_the_field(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("min_severity: yellow", "min_severity: amber"))
    assert "routes[1].min_severity" in message and ":9:" in message


def test_unknown_sector_names_the_field(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("[hazchem, dust]", "[hazchem, coal]"))
    assert "routes[2].sectors" in message and "coal" in message


def test_bad_region_prefix_names_the_field(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace('"3205"', '"32-05"'))
    assert "routes[1].region_prefix" in message


def test_undefined_department_names_the_route_entry(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("[fire, county]", "[fire, police]"))
    assert "routes[2].departments[1]" in message and "'police'" in message and ":10:" in message


def test_missing_field_names_it(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("{name: Fire, ", "{"))
    assert "departments.fire.name" in message and "required field is missing" in message


def test_bad_department_id_names_the_key(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("  mines: {", "  Mine Safety: {"))
    assert "departments.Mine Safety" in message and ":6:" in message


def test_unknown_placeholder_is_an_error(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("https://fire.example/hook", "${FIRE_URL}/hook"))
    assert "departments.fire.webhook" in message and "FIRE_URL" in message


def test_webhook_must_be_http(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("https://fire.example/hook", "fire.example/hook"))
    assert "departments.fire.webhook" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    message = error_of(tmp_path, SMALL.replace("  - {sectors: [mine]", "  - {sectors: [mine"))
    assert "not valid YAML" in message and ":11:" in message


def test_empty_and_missing_files(tmp_path: Path):
    assert "empty" in error_of(tmp_path, "# nothing\n")
    with pytest.raises(RoutingError, match="nope.yaml"):
        load_routing(tmp_path / "nope.yaml", alerts_api=API)


def test_all_errors_are_reported_at_once(tmp_path: Path):
    text = SMALL.replace("min_severity: yellow", "min_severity: amber").replace("[hazchem, dust]", "[coal]")
    message = error_of(tmp_path, text)
    assert "routes[1].min_severity" in message and "routes[2].sectors" in message
