"""Who may do what: every endpoint of the alert API called as every kind of caller, on a real
SQLite store; each refusal (401 without a valid token, 403 for a role or enterprise that may
not) and each permission is asserted. A new endpoint without a row here fails the test."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.auth import hash_token, issue_token, revoke_token
from alerts.reports import ReportInput, check_report, submit_report
from alerts.routing import load_routing
from alerts.silences import Matcher
from alerts.store import TaskStore, now_ms, task_id_for
from config.settings import Settings
from sensors.registry import load_registry

from .test_alerts_api import incident

OWN, OTHER = "91320583MA1XXXXXX0", "91320585MA2YYYYYY1"
ROUTING = """\
departments:
  enterprise: {name: Enterprise duty room, webhook: "http://127.0.0.1:9/enterprise", level: enterprise, region: "32"}
  county: {name: County bureau, webhook: "http://127.0.0.1:9/county", level: county, region: "32"}
routes:
  - {sectors: ["*"], departments: [enterprise, county]}
"""

# Who calls. The enterprise operator appears three times: on its own enterprise-level task, on
# the county bureau's task for its own incident, and on another enterprise's task.
CALLERS = (
    "anonymous",
    "bad_token",
    "revoked",
    "admin",
    "duty_officer",
    "inspector",
    "ent_own",
    "ent_regulator_task",
    "ent_other",
)
ALL_OK = dict.fromkeys(CALLERS[3:], 200)
NOBODY_ELSE = {"anonymous": 401, "bad_token": 401, "revoked": 401}
ACT = {"admin": 200, "duty_officer": 200, "inspector": 403, "ent_own": 200, "ent_regulator_task": 403, "ent_other": 403}
READ_ONE = {**ALL_OK, "ent_other": 403}

# (method, path template, json body, state the task must be in first, expected status per caller)
MATRIX = [
    ("GET", "/tasks", None, None, {**ALL_OK, "ent_other": 403}),  # ent_other asks for the other enterprise
    ("GET", "/tasks/{task_id}", None, None, READ_ONE),
    ("GET", "/incidents", None, None, {**ALL_OK, "ent_other": 403}),
    ("GET", "/incidents/{incident_id}", None, None, READ_ONE),
    ("POST", "/tasks/{task_id}/ack", {"note": "on it"}, None, ACT),
    ("POST", "/tasks/{task_id}/assign", {"person": "Engineer Li"}, "acknowledged", ACT),
    ("POST", "/tasks/{task_id}/handover", {"department": "{handover_to}"}, "acknowledged", ACT),
    ("POST", "/tasks/{task_id}/notes", {"text": "called the site"}, None, ACT),
    ("POST", "/tasks/{task_id}/resolve", {"note": "valve closed"}, "acknowledged", ACT),
    ("POST", "/tasks/{task_id}/close", {}, "resolved", ACT),
    (
        "GET",
        "/stats",
        None,
        None,
        {
            "admin": 200,
            "duty_officer": 200,
            "inspector": 200,
            "ent_own": 403,
            "ent_regulator_task": 403,
            "ent_other": 403,
        },
    ),
    ("GET", "/tokens", None, None, {**dict.fromkeys(CALLERS[3:], 403), "admin": 200}),
    (
        "GET",
        "/silences",
        None,
        None,
        {
            "admin": 200,
            "duty_officer": 200,
            "inspector": 200,
            "ent_own": 403,
            "ent_regulator_task": 403,
            "ent_other": 403,
        },
    ),
    (
        "POST",
        "/silences",
        {"matcher": {"site_ids": ["site-1"]}, "minutes": 30, "reason": "drill at the tank farm"},
        None,
        {**dict.fromkeys(CALLERS[3:], 403), "admin": 201, "duty_officer": 201},
    ),
    (
        "DELETE",
        "/silences/{silence_id}",
        None,
        None,
        {**dict.fromkeys(CALLERS[3:], 403), "admin": 200, "duty_officer": 200},
    ),
]
OVERVIEW = {**dict.fromkeys(CALLERS[3:], 403), "admin": 200, "duty_officer": 200, "inspector": 200}
# The duty console's calls (issue 8): the page shows what these answer and enables what they allow.
MATRIX += [
    ("GET", "/v1/me", None, None, ALL_OK),
    ("GET", "/v1/board", None, None, ALL_OK),  # an enterprise gets only its own (test_console_roles)
    ("GET", "/v1/wall", None, None, ALL_OK),
    ("GET", "/v1/events", None, None, ALL_OK),
    ("GET", "/v1/incidents/{incident_id}/detail", None, None, READ_ONE),
    ("GET", "/v1/reports", None, None, OVERVIEW),
    ("GET", "/v1/reports/{tracking}/photos/{idx}", None, None, OVERVIEW),
    ("POST", "/v1/reports/{tracking}/link", {"incident_id": "inc-own", "reason": "same leak"}, None, OVERVIEW),
    ("POST", "/v1/reports/{tracking}/unfounded", {"reason": "nothing found on site"}, None, OVERVIEW),
]
PUBLIC = {
    ("GET", "/"),
    ("GET", "/wall"),
    ("GET", "/report"),
    ("GET", "/v1/report-form"),
    ("POST", "/v1/reports"),
    ("GET", "/v1/reports/{tracking}"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


class World:
    """A store with one incident of each of two enterprises (tasks for both departments), a token per role."""

    def __init__(self, tmp_path: Path, db_url: str | None = None):
        routing_file = tmp_path / "routing.yaml"
        routing_file.write_text(ROUTING)
        self.settings = Settings(state_dir=tmp_path, routing=routing_file, alerts_db_url=db_url)
        self.routing = load_routing(routing_file, alerts_api="http://alerts.test")
        self.store = TaskStore(self.settings.alerts_store)
        own = incident().model_copy(update={"incident_id": "inc-own", "enterprise_id": OWN})
        other = incident().model_copy(update={"incident_id": "inc-other", "enterprise_id": OTHER})
        for inc in (own, other):
            self.store.record_incident(inc, ["enterprise", "county"], 30)
        self.secrets = {r: issue_token(self.store, f"{r} holder", r)[1] for r in ("admin", "duty_officer", "inspector")}
        self.secrets["ent"] = issue_token(self.store, "operator", "enterprise", OWN)[1]
        now = now_ms()
        self.silence_id = self.store.add_silence(
            Matcher(site_ids=["elsewhere"]), starts_at=now, ends_at=now + 3_600_000, created_by="x", reason="y"
        ).silence_id
        revoked, self.secrets["revoked"] = issue_token(self.store, "former", "duty_officer")
        revoke_token(self.store, revoked.token_id)
        self.client = TestClient(create_app(self.settings, self.store, lambda: self.routing))
        self.client.app.state.stopping.set()  # an event stream answers its first event, then ends
        self.tracking = submit_test_report(self.store, self.routing)

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "anonymous":
            return {}
        if caller == "bad_token":
            return {"Authorization": "Bearer swt_not-a-token-anyone-issued"}
        key = "ent" if caller.startswith("ent_") else caller
        return {"Authorization": f"Bearer {self.secrets[key]}"}

    def target(self, caller: str) -> tuple[str, str, str]:
        """(task id, incident id, department to hand over to) the caller acts on."""
        if caller == "ent_other":
            return task_id_for("inc-other", "enterprise"), "inc-other", "county"
        if caller == "ent_regulator_task":
            return task_id_for("inc-own", "county"), "inc-own", "enterprise"
        return task_id_for("inc-own", "enterprise"), "inc-own", "county"


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def submit_test_report(store: TaskStore, routing) -> str:
    """A public report with one photo, as the form would leave it; returns its tracking number."""
    registry = load_registry(Settings().registry)
    raw = ReportInput(
        what="Smell of gas by the east gate", when=time.strftime("%Y-%m-%dT%H:%M"), region="320582", address="Gate"
    )
    fields, photos = check_report(
        raw, registry, tz="Asia/Shanghai", now=now_ms(), photos=[("p.png", PNG)], max_photos=3, max_photo_bytes=10_000
    )
    return submit_report(store, routing, registry, fields, photos, source="127.0.0.1", severity="yellow")[0]


def cases():
    for method, path, body, state, allowed in MATRIX:
        for caller in CALLERS:
            expected = NOBODY_ELSE.get(caller) or allowed[caller]
            yield pytest.param(method, path, body, state, caller, expected, id=f"{method} {path} as {caller}")


@pytest.mark.parametrize(("method", "path", "body", "state", "caller", "expected"), list(cases()))
def test_role_matrix(tmp_path: Path, store_target: Path | str, method, path, body, state, caller, expected):
    # Every call on both databases: the role checks are the API's, the data they filter is the store's.
    world = World(tmp_path, store_target if isinstance(store_target, str) else None)
    task_id, incident_id, handover_to = world.target(caller)
    if state in ("acknowledged", "resolved"):
        world.store.acknowledge(task_id, "setup")
    if state == "resolved":
        world.store.resolve(task_id, "setup")
    url = path.format(
        task_id=task_id, incident_id=incident_id, silence_id=world.silence_id, tracking=world.tracking, idx=0
    )
    params = {"enterprise_id": OTHER} if caller == "ent_other" and path in ("/tasks", "/incidents") else None
    if body is not None:
        body = {k: v.format(handover_to=handover_to) if isinstance(v, str) else v for k, v in body.items()}
    trail_before = world.store.audit(task_id)
    response = world.client.request(method, url, json=body, params=params, headers=world.headers(caller))
    assert response.status_code == expected, response.text
    if expected in (401, 403):
        assert world.store.audit(task_id) == trail_before  # a refused call changes nothing
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if caller == "ent_own" and method == "GET" and path in ("/tasks", "/incidents"):
        rows = response.json()
        assert rows and {r["enterprise_id"] for r in rows} == {OWN}  # only its own enterprise
    world.store.close()


def test_the_matrix_covers_every_endpoint(tmp_path: Path):
    world = World(tmp_path)
    routes = {
        (method, r.path)
        for r in world.client.app.routes
        if isinstance(r, APIRoute) and not r.path.startswith("/inbox")
        for method in r.methods
    }
    assert routes == {(m, p) for m, p, *_ in MATRIX} | PUBLIC
    world.store.close()


def test_api_docs_need_no_cdn(tmp_path: Path):
    world = World(tmp_path)
    for page in ("/docs", "/redoc"):
        html = world.client.get(page).text
        assert "cdn" not in html.lower() and "https://" not in html
    assert world.client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "/tasks/{task_id}/ack" in world.client.get("/openapi.json").json()["paths"]
    world.store.close()


def test_demo_inbox_is_mounted_only_when_asked(tmp_path: Path):
    world = World(tmp_path)
    assert world.client.get("/inbox/county").status_code == 404
    demo = create_app(world.settings.model_copy(update={"alerts_demo_inbox": True}), world.store, lambda: world.routing)
    assert TestClient(demo).get("/inbox/county").status_code == 200
    world.store.close()


def test_secrets_never_leave_the_service(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    world = World(tmp_path)
    secret = world.secrets["admin"]
    responses = [
        world.client.get("/tasks", headers=world.headers("admin")),
        world.client.get("/tokens", headers=world.headers("admin")),
        world.client.get("/tasks", headers={"Authorization": f"Bearer {secret}x"}),  # a mistyped token
        world.client.get("/tasks", headers={"Authorization": f"Basic {secret}"}),
        world.client.get("/health"),
        world.client.get("/metrics"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 401, 200, 200]
    hashed = hash_token(secret)
    for response in responses:
        assert secret not in response.text and hashed not in response.text
    assert secret not in caplog.text and hashed not in caplog.text
    files = [world.store.path, world.store.path.with_name(world.store.path.name + "-wal")]
    at_rest = b"".join(f.read_bytes() for f in files if f.exists())  # the WAL holds recent writes
    assert secret.encode() not in at_rest and hashed.encode() in at_rest  # at rest: the hash only
    world.store.close()


def test_token_rules(tmp_path: Path):
    world = World(tmp_path)
    with pytest.raises(ValueError, match="enterprise"):
        issue_token(world.store, "x", "enterprise")  # an operator must be bound to an enterprise
    with pytest.raises(ValueError, match="enterprise"):
        issue_token(world.store, "x", "inspector", OWN)
    with pytest.raises(ValueError, match="unknown role"):
        issue_token(world.store, "x", "superuser")
    world.store.close()
