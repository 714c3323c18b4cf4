"""The duty console's API and public reports on a real SQLite store, with the shipped registry,
rule catalogue and routing file (no broker: the browser test runs the whole stack)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.auth import issue_token
from alerts.console.directory import load_directory
from alerts.console.events import changes_since, cursor_now
from alerts.reports import ReportInput, check_report
from alerts.routing import load_routing
from alerts.schema import MIGRATIONS, SCHEMA_VERSION
from alerts.store import TaskStore, task_id_for
from config.settings import PROJECT_ROOT, Settings
from rules.models import IncidentEvent, TimelineEntry

from .test_alerts_api import T0

SITE, FAN = "am-qd-mr01", "am-qd-mr01-mr-fan01"
AMMONIA = "91320681604192189N"  # the enterprise of the ammonia machine room
HAZCHEM = "913205828486022959"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
STATIC = PROJECT_ROOT / "alerts" / "console" / "static"


def red_incident(enterprise_id: str = AMMONIA, incident_id: str = "inc-red") -> IncidentEvent:
    return IncidentEvent(
        incident_id=incident_id,
        status="open",
        severity="red",
        rule_id="correlation.severe",
        title="氨制冷机房: interlock_failed",
        site_id=SITE,
        site_name="氨制冷机房",
        enterprise_id=enterprise_id,
        enterprise_name="",
        region="320681",
        sector="ammonia",
        opened_at=T0,
        updated_at=T0,
        hazard_ids=["hz-1", "hz-2"],
        open_hazard_ids=["hz-1", "hz-2"],
        timeline=[
            TimelineEntry(ts=T0, what="high am-qd-mr01-mr-nh3-01", hazard_id="hz-1"),
            TimelineEntry(
                ts=T0, what=f"linked interlock_failed exhaust_fan_running {FAN} 0 bool (limit 1)", hazard_id="hz-2"
            ),
        ],
    )


class World:
    """The real routing file and registry; a red ammonia incident routed and stored; a token per role."""

    def __init__(self, tmp_path: Path, **settings):
        self.settings = Settings(state_dir=tmp_path, reports_per_hour=3, **settings)
        self.routing = load_routing(self.settings.routing, alerts_api="http://alerts.test")
        self.store = TaskStore(self.settings.alerts_db_path)
        self.store.record_incident(red_incident(), ["enterprise-duty", "county-emergency", "nantong-emergency"], 3)
        self.secrets = {r: issue_token(self.store, f"{r} holder", r)[1] for r in ("admin", "duty_officer", "inspector")}
        self.secrets["own"] = issue_token(self.store, "operator", "enterprise", AMMONIA)[1]
        self.secrets["other"] = issue_token(self.store, "other operator", "enterprise", HAZCHEM)[1]
        self.client = TestClient(create_app(self.settings, self.store, lambda: self.routing))
        self.client.app.state.stopping.set()

    def get(self, path: str, who: str = "duty_officer", **kw):
        return self.client.get(path, headers={"Authorization": f"Bearer {self.secrets[who]}"}, **kw)

    def post(self, path: str, who: str = "duty_officer", **kw):
        return self.client.post(path, headers={"Authorization": f"Bearer {self.secrets[who]}"}, **kw)


@pytest.fixture
def world(tmp_path: Path):
    w = World(tmp_path)
    yield w
    w.store.close()


def local(delta: timedelta = timedelta()) -> str:
    """A datetime-local value in the console's time zone."""
    return (datetime.now(ZoneInfo("Asia/Shanghai")) + delta).strftime("%Y-%m-%dT%H:%M")


def report(world: World, files=None, **fields):
    data = {"what": "仓库后门堆放液化气钢瓶，有气味", "when": local(), "enterprise_id": HAZCHEM, **fields}
    return world.client.post("/v1/reports", data=data, files=files or [])


# --- the console's list, wall and detail ------------------------------------------------------


def test_board_shows_names_rule_texts_and_what_each_role_may_do(world: World):
    item = world.get("/v1/board").json()["items"][0]
    assert item["enterprise"]["name"] == "启东海韵水产冷冻食品有限公司"  # from the registry, not the event
    assert item["region"]["full"] == "江苏省 南通市 启东市" and item["sector"]["zh"] == "涉氨制冷"
    rules = {r["id"]: r for r in item["rules"]}
    assert set(rules) == {"ammonia.nh3", "ammonia.exhaust_fan"}
    assert rules["ammonia.exhaust_fan"]["description"]["zh"] == "氨气报警后事故排风机未启动"
    assert rules["ammonia.exhaust_fan"]["action"]["zh"].startswith("立即手动启动事故排风机")
    assert item["next_deadline"] == min(t["ack_deadline"] for t in item["tasks"])
    assert [t["department"] for t in item["tasks"]] == ["enterprise-duty", "county-emergency", "nantong-emergency"]
    assert all(t["may_act"] for t in item["tasks"])
    assert not any(t["may_act"] for t in world.get("/v1/board", "inspector").json()["items"][0]["tasks"])
    own = world.get("/v1/board", "own").json()["items"][0]["tasks"]
    assert {t["department"] for t in own if t["may_act"]} == {"enterprise-duty"}
    assert world.get("/v1/board", "other").json()["items"] == []
    assert world.get("/v1/wall", "other").json()["open"] == 0


def test_wall_counts_by_city_and_sector_and_groups_events(world: World):
    wall = world.get("/v1/wall").json()
    assert wall["by_severity"]["red"] == 1 and wall["open"] == 1
    assert [(r["key"], r["red"]) for r in wall["by_region"]] == [("南通市", 1)]
    assert [(r["key"], r["total"]) for r in wall["by_sector"]] == [("ammonia", 1)]
    assert [i["incident_id"] for i in wall["severe"]] == ["inc-red"]
    assert wall["enterprises"][0]["severity"] == "red"
    created = [e for e in wall["events"] if e["event"] == "created"]
    assert len(created) == 1 and len(created[0]["departments"]) == 3  # one line for three departments


def test_a_task_leaves_the_board_only_when_every_task_is_finished(world: World):
    closed = red_incident().model_copy(update={"status": "closed", "updated_at": T0 + 1, "closed_at": T0 + 1})
    world.store.record_incident(closed, ["enterprise-duty", "county-emergency", "nantong-emergency"], 3)
    assert [i["status"] for i in world.get("/v1/board").json()["items"]] == ["closed"]  # tasks still open
    for dept in ("enterprise-duty", "county-emergency", "nantong-emergency"):
        task_id = task_id_for("inc-red", dept)
        world.store.acknowledge(task_id, "x")
        world.store.resolve(task_id, "x")
    assert world.get("/v1/board").json()["items"] == []


def test_detail_says_when_influxdb_cannot_be_reached(world: World, tmp_path: Path):
    world.settings.influx_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    detail = world.get("/v1/incidents/inc-red/detail").json()
    assert detail["hazards"] == [] and "InfluxDB not reachable" in detail["hazards_error"]
    assert [e["what"].split()[0] for e in detail["timeline"]] == ["high", "linked"]
    assert {t["department"] for t in detail["tasks"]} == {"enterprise-duty", "county-emergency", "nantong-emergency"}
    assert all(t["audit"][0]["event"] == "created" for t in detail["tasks"])
    assert world.get("/v1/incidents/inc-red/detail", "other").status_code == 403
    assert world.get("/v1/incidents/nope/detail").status_code == 404


# --- the live feed ------------------------------------------------------------------------------


def test_change_feed_carries_each_change_once_and_only_to_whom_may_see_it(world: World):
    mine, theirs, everyone = cursor_now(world.store), cursor_now(world.store), cursor_now(world.store)
    assert changes_since(world.store, everyone, None, True) is None
    world.store.acknowledge(task_id_for("inc-red", "county-emergency"), "Duty officer Wang")
    found = changes_since(world.store, everyone, None, True)
    assert found is not None and [(e["event"], e["actor"]) for e in found["events"]] == [
        ("acknowledged", "Duty officer Wang")
    ]
    assert changes_since(world.store, everyone, None, True) is None  # the cursor moved on
    assert changes_since(world.store, mine, AMMONIA, False) is not None
    assert changes_since(world.store, theirs, HAZCHEM, False) is None  # another enterprise's task
    world.store.record_incident(red_incident(HAZCHEM, "inc-other"), ["county-emergency"], 3)
    found = changes_since(world.store, theirs, HAZCHEM, False)
    assert found is not None and [i["incident_id"] for i in found["incidents"]] == ["inc-other"]


def test_event_stream_answers_as_server_sent_events(world: World):
    response = world.get("/v1/events")  # the service is stopping: the stream sends its hello and ends
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert "event: hello" in response.text
    assert world.client.get("/v1/events").status_code == 401


# --- public reports -------------------------------------------------------------------------------


def test_a_report_becomes_a_county_task_and_can_be_tracked(world: World):
    response = report(world, files=[("photos", ("p.png", PNG, "image/png"))], contact="138 0000 0000")
    assert response.status_code == 201, response.text
    tracking = response.json()["tracking"]
    assert tracking.startswith("R") and len(tracking) == 18
    tasks = world.get("/tasks", params={"incident_id": f"INC-{tracking}"}).json()
    assert [t["department"] for t in tasks] == ["county-emergency"]  # the routing file's `kinds: [report]` route
    assert world.store.audit(tasks[0]["task_id"])[0].event == "created"
    assert [n.kind for n in world.store.notifications(tasks[0]["task_id"])] == ["task"]  # queued for delivery
    public = world.client.get(f"/v1/reports/{tracking.lower()}").json()
    assert public["status"] == "dispatched" and "contact" not in public and "what" not in public
    listed = world.get("/v1/reports", "inspector").json()
    assert listed[0]["contact"] == "138 0000 0000" and listed[0]["photos"] == 1
    assert world.get(f"/v1/reports/{tracking}/photos/0", "inspector").content == PNG
    assert world.get("/v1/reports", "own").status_code == 403
    board = {i["incident_id"]: i for i in world.get("/v1/board").json()["items"]}
    assert board[f"INC-{tracking}"]["kind"] == "report"
    assert board[f"INC-{tracking}"]["rules"][0]["description"]["zh"] == "群众举报投诉"
    detail = world.get(f"/v1/incidents/INC-{tracking}/detail", "inspector").json()
    assert detail["report"]["what"] == "仓库后门堆放液化气钢瓶，有气味"
    assert board[f"INC-{tracking}"]["enterprise"]["name"] == "张家港港丰石化仓储有限公司"
    # The enterprise reported on sees nothing of it, through any call.
    assert world.get(f"/v1/incidents/INC-{tracking}/detail", "other").status_code == 403
    assert world.get("/tasks", "other").json() == [] and world.get("/incidents", "other").json() == []
    assert world.get("/v1/board", "other").json()["items"] == []


@pytest.mark.parametrize(
    ("fields", "files", "named"),
    [
        ({"what": "气味"}, None, "what"),
        ({"enterprise_id": "91320000000000000X"}, None, "enterprise_id"),
        ({"enterprise_id": ""}, None, "address"),
        ({"enterprise_id": "", "address": "东门外", "region": ""}, None, "region"),
        ({"enterprise_id": "", "address": "东门外", "region": "110105"}, None, "region"),
        ({"when": "yesterday"}, None, "when"),
        ({"when": local(timedelta(hours=2))}, None, "when"),
        ({"anonymous": "1", "contact": "138"}, None, "contact"),
        ({}, [("photos", ("x.png", b"MZ not an image", "image/png"))], "photos"),
        ({}, [("photos", ("big.png", PNG + bytes(6000), "image/png"))], "photos"),
        ({}, [("photos", (f"{i}.png", PNG, "image/png")) for i in range(4)], "photos"),
    ],
)
def test_bad_reports_are_refused_naming_the_field(tmp_path: Path, fields, files, named):
    world = World(tmp_path, reports_photo_max_bytes=5000)
    response = report(world, files=files, **fields)
    assert response.status_code == 422
    assert named in {e["field"] for e in response.json()["detail"]}, response.json()
    assert {t.incident_id for t in world.store.list_tasks()} == {"inc-red"}  # nothing stored, nobody told
    world.store.close()


def test_an_oversized_report_is_refused_before_it_is_read(world: World):
    limit = world.settings.reports_max_photos * world.settings.reports_photo_max_bytes + 256 * 1024
    response = report(world, files=[("photos", ("huge.png", PNG + bytes(limit), "image/png"))])
    assert response.status_code == 413 and response.json()["detail"][0]["field"] == "photos"


def test_reports_are_rate_limited_per_source(world: World):
    codes = [report(world).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    refused = report(world)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0


def test_inspector_links_a_report_or_closes_it_as_unfounded(world: World):
    first, second = report(world).json()["tracking"], report(world).json()["tracking"]
    body = {"reason": "现场核查无液化气钢瓶"}
    assert world.post(f"/v1/reports/{first}/unfounded", "own", json=body).status_code == 403
    decided = world.post(f"/v1/reports/{first}/unfounded", "inspector", json=body).json()
    assert decided["status"] == "unfounded" and decided["decided_by"] == "inspector holder"
    assert world.post(f"/v1/reports/{first}/unfounded", "inspector", json=body).status_code == 409
    incident = world.store.latest_incident(f"INC-{first}")
    assert incident["status"] == "closed" and "unfounded: 现场核查无液化气钢瓶" in incident["timeline"][-1]["what"]
    task_id = task_id_for(f"INC-{first}", "county-emergency")
    assert [n.kind for n in world.store.notifications(task_id)] == ["task", "revision"]  # the county is told
    assert world.client.get(f"/v1/reports/{first}").json()["reason"] == "现场核查无液化气钢瓶"
    missing = world.post(f"/v1/reports/{second}/link", json={"incident_id": "inc-nope", "reason": "x"})
    assert missing.status_code == 422 and "incident_id" in missing.json()["detail"]
    linked = world.post(f"/v1/reports/{second}/link", json={"incident_id": "inc-red", "reason": "同一处泄漏"}).json()
    assert linked["status"] == "linked" and linked["linked_incident_id"] == "inc-red"
    assert world.post("/v1/reports/R-nope/unfounded", json=body).status_code == 404
    assert world.post(f"/v1/reports/{second}/unfounded", json={"reason": ""}).status_code == 422


# --- pages and names ------------------------------------------------------------------------------


def test_pages_and_assets_are_served_locally(world: World):
    for page, script in (("/", "console.js"), ("/wall", "wall.js"), ("/report", "report.js")):
        html = world.client.get(page)
        assert html.status_code == 200 and f"/static/console/{script}" in html.text
        assert "default-src 'self'" in html.headers["content-security-policy"]
    for asset in STATIC.iterdir():
        served = world.client.get(f"/static/console/{asset.name}")
        assert served.status_code == 200
        assert "http://" not in served.text and "https://" not in served.text, f"{asset.name} reaches out"
    form = world.client.get("/v1/report-form").json()
    assert {"code": "320681", "name": "启东市", "full": "江苏省 南通市 启东市", "city": "南通市"} in form["regions"]


def test_when_is_read_in_the_console_time_zone():
    registry = load_directory(Settings().registry, Settings().rules_dir).registry
    now = 1_780_310_000_000  # 2026-06-01 10:33 UTC

    def happened(when: str) -> int:
        raw = ReportInput(what="东门外有人违规动火", when=when, region="320681", address="东门外")
        fields, _ = check_report(raw, registry, tz="Asia/Shanghai", now=now, photos=[], max_photos=3, max_photo_bytes=1)
        return fields["happened_at"]

    assert happened("2026-06-01T08:00") == 1_780_272_000_000  # 08:00 in Shanghai = 00:00 UTC
    assert happened("2026-06-01T08:00+00:00") == 1_780_300_800_000  # an explicit offset wins


def test_directory_finds_the_rule_of_each_hazard_kind():
    names = load_directory(Settings().registry, Settings().rules_dir)
    assert names.rule_of_hazard("ammonia", "interlock_failed", FAN) == "ammonia.exhaust_fan"
    assert names.rule_of_hazard("ammonia", "high", "am-qd-mr01-mr-nh3-01") == "ammonia.nh3"
    assert names.rule_of_hazard("ammonia", "offline", "am-qd-mr01-mr-nh3-01") == "ammonia.offline"
    assert names.rule_of_hazard("ammonia", "high", "no-such-sensor") is None
    assert names.rule_text("no.such_rule")["description"] is None
    assert names.region("320681")["full"] == "江苏省 南通市 启东市"


def test_a_scope_incident_shows_its_correlation_rule_first():
    names = load_directory(Settings().registry, Settings().rules_dir, Settings().correlation_dir)
    county = {"rule_id": "region.county_rainstorm_ponds", "scope": "county", "sector": "mine", "timeline": []}
    [own] = names.hazard_rules(county)
    assert own["id"] == "region.county_rainstorm_ponds" and "叫应" in own["action"]["zh"]
    assert names.hazard_rules({**county, "scope": "site"}) == []  # a site incident: its hazards' rules only


def test_a_store_of_the_previous_release_gains_the_report_tables(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for version, step in enumerate(MIGRATIONS[:4], start=1):
        step(db)
        db.execute(f"PRAGMA user_version = {version}")
    db.close()
    store = TaskStore(path)
    assert store.migrated_from == 4 and SCHEMA_VERSION >= 5
    with store.reading() as conn:
        assert conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM report_photos").fetchone()[0] == 0
    store.close()
