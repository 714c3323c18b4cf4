"""The province wall counts incidents open now (each incident's latest state), per region/sector and colour,
on the real InfluxDB: incidents that opened and closed within the range are not counted."""

from __future__ import annotations

import time
import uuid

import pytest_asyncio

from history.dashboards import queries
from history.retention import ensure_retention, run
from rules.models import IncidentEvent
from streams.influx import InfluxWriter, incident_line, incident_state_line, query, rows

MIN = 60_000
DAY = 86_400_000


def _event(incident_id: str, status: str, severity: str, region: str, sector: str, at: int, opened: int):
    return IncidentEvent(
        incident_id=incident_id,
        status=status,
        severity=severity,
        rule_id="corr-test",
        title=f"{incident_id} {status}",
        site_id=f"site-{incident_id}",
        site_name=f"site {incident_id}",
        enterprise_id=f"ent-{region}",
        enterprise_name=f"enterprise {region}",
        region=region,
        sector=sector,
        opened_at=opened,
        updated_at=at,
        closed_at=at if status == "closed" else None,
        hazard_ids=["h1"],
        open_hazard_ids=[] if status == "closed" else ["h1"],
        timeline=[],
    )


def _history(now: int) -> list[IncidentEvent]:
    """Each incident's state changes: (id, [(status, severity, minutes before now)], region, sector)."""
    plan = [
        ("A", [("open", "red", 90), ("closed", "red", 60)], "320100", "hazchem"),  # opened and closed in range
        ("B", [("open", "orange", 80), ("update", "red", 30)], "320100", "hazchem"),  # escalated, open
        ("C", [("open", "orange", 20)], "320100", "hazchem"),
        ("D", [("open", "red", 3 * 1440)], "320200", "mine"),  # opened days before the range, still open
        ("E", [("open", "yellow", 3 * 1440), ("closed", "yellow", 2 * 1440)], "320200", "mine"),
        ("F", [("open", "orange", 50), ("update", "red", 45), ("closed", "red", 10)], "320200", "dust"),
        ("G", [("open", "blue", 5)], "320100", "mine"),
    ]
    out = []
    for iid, changes, region, sector in plan:
        opened = now - changes[0][2] * MIN
        out += [_event(iid, st, sev, region, sector, now - ago * MIN, opened) for st, sev, ago in changes]
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wall_db(stack):
    """Its own database, written through the worker's line functions and writer."""
    s = stack.model_copy(update={"influx_db": f"wall_{uuid.uuid4().hex[:8]}", "influx_events_rp": None})
    ensure_retention(s)
    writer = InfluxWriter(s)
    events = _history(int(time.time() * 1000))
    await writer.write([f(e) for e in events for f in (incident_line, incident_state_line)])
    await writer.aclose()
    assert writer.points_written == 2 * len(events)
    yield s
    run(s, f'DROP DATABASE "{s.influx_db}"')


def _panel(title: str) -> str:
    return next(q.text for q in queries() if q.dashboard == "wall" and q.panel == title)


def test_open_incidents_by_region_and_sector_count_latest_states(wall_db):
    got = rows(query(wall_db, _panel("Open incidents now by region and sector (red, orange)")))
    table = {(r["region"], r["sector"]): (r["open"], r["red"], r["orange"]) for r in got}
    # A and F opened and closed within the last two hours, E days ago: none counts. B is red now.
    assert table == {("320100", "hazchem"): (2, 1, 1), ("320100", "mine"): (1, 0, 0), ("320200", "mine"): (1, 1, 0)}


def test_open_incidents_by_colour_and_the_list(wall_db):
    (colours,) = rows(query(wall_db, _panel("Open incidents now, by colour")))
    assert {c: colours[c] for c in ("red", "orange", "yellow", "blue")} == {
        "red": 2,
        "orange": 1,
        "yellow": 0,
        "blue": 1,
    }
    listed = rows(query(wall_db, _panel("Open incidents now")))
    assert {r["incident_id"]: r["severity"] for r in listed} == {"B": "red", "C": "orange", "D": "red", "G": "blue"}
    assert all(r["status"] != "closed" and r["opened_at"] for r in listed)
    # What the wall showed before: incidents opened in a two-hour range, open or not (A, B, C, F, G).
    old = rows(
        query(wall_db, 'SELECT count("incident_id") FROM "incident" WHERE "status" = \'open\' AND time > now() - 2h')
    )
    assert old[0]["count"] == 5
