"""The generated Grafana dashboards: committed output is current, and every InfluxQL panel query returns
data of its panel's shape from the real InfluxDB after a real run, naming only what is written."""

from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY

import alerts.metrics  # noqa: F401  (registers the alert service's metrics)
import streams.pipeline  # noqa: F401  (registers the worker's metrics)
from history.dashboards import OUT, queries, rendered
from streams.influx import query

from .test_history_schema import documented
from .test_history_wall import wall_db  # noqa: F401  (the wall scenario's database)

INFLUXQL = [q for q in queries() if q.kind == "influxql"]
PROMQL = [q for q in queries() if q.kind == "promql"]


def test_committed_dashboards_are_what_the_code_generates():
    for rel, text in rendered().items():
        assert (OUT / rel).read_text(encoding="utf-8") == text, f"{rel} is stale: run `safewatch grafana build`"
    assert sum(text.count("\n") for text in rendered().values()) < 3000, "dashboards stay compact"


def test_panels_name_only_measurements_tags_and_fields_that_are_written():
    doc = documented()
    known = set(doc) | {n for m in doc.values() for n in m}
    for q in INFLUXQL:
        names = set(re.findall(r'"([^"]+)"', q.text))
        aliases = set(re.findall(r'AS "([^"]+)"', q.text))
        unknown = names - aliases - known
        assert not unknown, f"{q.dashboard}/{q.panel} names {unknown}, never written"


def _bind(text: str, start: int, end: int, site: str, sensor: str) -> str:
    return (
        text.replace("$timeFilter", f"time >= {start}ms AND time < {end}ms")
        .replace("$__interval", "10s")
        .replace("$site", re.escape(site))
        .replace("$sensor", re.escape(sensor))
    )


@pytest.mark.parametrize("q", INFLUXQL, ids=lambda q: f"{q.dashboard}:{q.panel}:{q.text[:40]}")
def test_every_influxql_panel_returns_data_of_its_shape(leak_run, q, request):
    hazard = next(h for h in leak_run.hazards if h["site_id"] == leak_run.site and h["sensor_id"])
    start, end = leak_run.start_ms - 60_000, leak_run.start_ms + 600_000
    series = query(leak_run.settings, _bind(q.text, start, end, leak_run.site, hazard["sensor_id"]))
    if '"incident_state"' in q.text:
        # "Open now" panels: every incident of the leak run is closed when it ends, so they run there
        # (no error) but their data is checked on the wall scenario, which leaves incidents open.
        series = query(request.getfixturevalue("wall_db"), q.text)
    assert series, f"{q.dashboard}/{q.panel} returned nothing"
    values = [v for s in series for v in s.get("values", [])]
    assert values
    columns = series[0]["columns"]
    if q.shape == "time_series" and not q.panel.startswith("variable"):
        assert columns[0] == "time"
        assert any(isinstance(x, int | float) and x for v in values for x in v[1:]), "no non-zero value"
    else:
        assert all(len(v) == len(columns) for v in values)


def test_every_promql_panel_names_a_metric_the_services_export():
    exported = {m.name for m in REGISTRY.collect()}
    exported |= {f"{n}_total" for n in exported} | {f"{n}_bucket" for n in exported}
    for q in PROMQL:
        metrics = set(re.findall(r"\b(safewatch_[a-z_]+)", q.text))
        assert metrics and metrics <= exported, f"{q.panel}: {metrics - exported} not exported"


def test_the_site_panel_draws_each_sensors_registry_set_points(leak_run):
    """Every sensor of the leak site with set points has them stored, as the registry gives them, hazard or not."""
    start, end = leak_run.start_ms - 60_000, leak_run.start_ms + 600_000
    site = leak_run.registry.sites[leak_run.site]
    for sensor_id in site.sensor_ids:
        want = leak_run.registry.sensors[sensor_id].alarms.set_points()
        got = query(
            leak_run.settings,
            f'SELECT * FROM "setpoint" WHERE "sensor_id" = \'{sensor_id}\' AND time >= {start}ms AND time < {end}ms',
        )
        if not want:
            assert not got, f"{sensor_id} has no set points, yet some were stored"
            continue
        points = [dict(zip(s["columns"], v, strict=True)) for s in got for v in s["values"]]
        assert points, f"no set points stored for {sensor_id}"
        assert all({k: p[k] for k in want} == want for p in points), sensor_id
        # one every SAFEWATCH_INFLUX_SETPOINT_EVERY_S of the sensor's time, not one per reading
        assert len(points) <= 1 + (end - start) // int(leak_run.settings.influx_setpoint_every_s * 1000)
