"""Generated per-county routes from the shipped registry, used through a routes_file, and
`safewatch alerts check` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alerts.counties import county_routes_yaml, is_county
from alerts.routing import escalation_target, load_routing, route
from config.settings import PROJECT_ROOT
from sensors.registry import load_registry

from .test_routing import incident

SHIPPED = PROJECT_ROOT / "config" / "routing.yaml"


def test_county_codes():
    assert is_county("320583") and not is_county("320500") and not is_county("320000") and not is_county("3205")


def test_generated_counties_route_and_escalate(tmp_path: Path):
    reg = load_registry(PROJECT_ROOT / "sensors" / "data" / "registry.yaml")
    text = county_routes_yaml(reg.regions.values(), prefix="32", webhook="https://county.example/{code}/hook")
    (tmp_path / "counties.yaml").write_text(text, encoding="utf-8")
    counties = sorted(c for c in reg.regions if is_county(c) and c.startswith("32"))
    assert len(counties) >= 10
    # The shipped tree with the single county endpoint swapped for the generated ones.
    main = SHIPPED.read_text(encoding="utf-8").replace(
        "    departments: [enterprise-duty, county-emergency]\n    routes:\n",
        "    departments: [enterprise-duty]\n    routes:\n      - {continue: true, routes_file: counties.yaml}\n",
    )
    (tmp_path / "routing.yaml").write_text(main, encoding="utf-8")
    routing = load_routing(tmp_path / "routing.yaml", alerts_api="http://a")
    some = counties[-1]
    assert route(incident("blue", region=some), routing) == ["enterprise-duty", f"county-{some}"]
    assert routing.departments[f"county-{some}"].webhook == f"https://county.example/{some}/hook"
    assert escalation_target(routing, "enterprise-duty", some) == f"county-{some}"  # the county's own bureau
    suzhou = next(c for c in counties if c.startswith("3205"))
    assert escalation_target(routing, f"county-{suzhou}", suzhou) == "suzhou-emergency"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "safewatch", "alerts", *args], capture_output=True, text=True, env=dict(os.environ)
    )


def test_alerts_check_command(tmp_path: Path):
    ok = run("check", str(SHIPPED))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = tmp_path / "routing.yaml"
    bad.write_text(SHIPPED.read_text(encoding="utf-8").replace("min_severity: orange", "min_severity: amber", 1))
    refused = run("check", str(bad))
    assert refused.returncode == 1
    # routes[0]: reports, routes[1]: maintenance notices
    assert f"{bad}:" in refused.stderr and "routes[2].routes[1].min_severity" in refused.stderr
