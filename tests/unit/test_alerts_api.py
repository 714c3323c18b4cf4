"""The alert service's HTTP API, delivery and `process_incident`, on a real SQLite store (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from alerts.api import create_app
from alerts.auth import issue_token
from alerts.delivery import deliver
from alerts.routing import load_routing
from alerts.schema import SCHEMA_VERSION
from alerts.service import Deliveries, process_incident, pump_outbox, store_incident
from alerts.store import TaskStore, task_id_for
from config.settings import Settings
from rules.models import IncidentEvent

T0 = 1_750_000_000_000
API = "http://alerts.test"
ROUTING = """\
departments:
  enterprise: {name: Enterprise duty room, webhook: "${ALERTS_API}/inbox/enterprise"}
  county: {name: County emergency bureau, webhook: "${ALERTS_API}/inbox/county"}
  city: {name: City emergency bureau, webhook: "${ALERTS_API}/inbox/city"}
  fire: {name: Fire and rescue, webhook: "${ALERTS_API}/inbox/fire"}
routes:
  - {sectors: ["*"], region_prefix: "32", departments: [enterprise, county], continue: true}
  - {sectors: ["*"], region_prefix: "32", min_severity: yellow, departments: [city], continue: true}
  - {sectors: [hazchem], min_severity: orange, departments: [fire], continue: true}
"""


def incident(severity: str = "yellow", updated_at: int = T0, incident_id: str = "inc-a1") -> IncidentEvent:
    return IncidentEvent(
        incident_id=incident_id,
        status="open",
        severity=severity,
        rule_id="hazchem.gas_and_temp",
        title="Gas and temperature rise",
        site_id="site-1",
        site_name="Tank area T-1",
        enterprise_id="91320583MA1XXXXXX0",
        enterprise_name="Kunshan Chem",
        region="320583",
        sector="hazchem",
        opened_at=T0,
        updated_at=updated_at,
        hazard_ids=["hz-1"],
        open_hazard_ids=["hz-1"],
        timeline=[],
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    return Settings(
        state_dir=tmp_path, routing=routing, delivery_retries=3, delivery_backoff_s=0.0, alerts_demo_inbox=True
    )


@pytest.fixture
def routing(settings: Settings):
    return load_routing(settings.routing, alerts_api=API)


@pytest.fixture
def store(settings: Settings):
    s = TaskStore(settings.alerts_db_path)
    yield s
    s.close()


@pytest.fixture
def api(settings: Settings, store: TaskStore, routing):
    """A client of the app, authenticated as a duty officer."""
    _, secret = issue_token(store, "Duty officer Wang", "duty_officer")
    with TestClient(create_app(settings, store, lambda: routing)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


@pytest_asyncio.fixture
async def inbox(settings: Settings, store: TaskStore):
    """An async HTTP client whose requests reach the real app in-process: its demo inbox
    receives the deliveries, and its API reads them back."""
    _, secret = issue_token(store, "inbox reader", "admin")
    transport = httpx.ASGITransport(
        app=create_app(settings, store, lambda: load_routing(settings.routing, alerts_api=API))
    )
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=transport, base_url=API, headers=headers) as client:
        yield client


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset], float]:
    """Every safewatch_alerts_* counter sample as GET /metrics serves it."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name.startswith("safewatch_alerts_") and s.name.endswith("_total")
    }


# --- the HTTP API --------------------------------------------------------------------------------


def test_health(api: TestClient, store: TaskStore):
    body = api.get("/health", headers={"Authorization": ""}).json()  # no token needed
    assert body["status"] == "ok" and body["schema_version"] == SCHEMA_VERSION and body["demo_inbox"] is True


def test_list_and_filter_tasks(api: TestClient, store: TaskStore):
    store.record_incident(incident("orange"), ["county", "city"], 15)
    store.record_incident(incident("blue", incident_id="inc-b2"), ["county"], 60)
    store.mark_sent(store.notifications(task_id_for("inc-a1", "city"))[0].id)
    assert len(api.get("/tasks").json()) == 3
    assert {t["incident_id"] for t in api.get("/tasks", params={"department": "county"}).json()} == {"inc-a1", "inc-b2"}
    delivered = api.get("/tasks", params={"status": "delivered"}).json()
    assert [t["department"] for t in delivered] == ["city"]
    assert len(api.get("/tasks", params={"incident_id": "inc-b2"}).json()) == 1
    assert api.get("/tasks", params={"status": "lost"}).status_code == 422


def test_task_detail_has_deliveries_and_audit(api: TestClient, store: TaskStore):
    task = store.record_incident(incident(), ["county"], 30)[0]
    [n] = store.unsent()
    for status in (502, 200):
        row, _ = store.begin_attempt(n, "http://x")
        store.finish_attempt(row, http_status=status, error=None if status == 200 else "HTTP 502", ok=status == 200)
    store.mark_sent(n.id, "HTTP 200 on attempt 2")
    store.record_incident(incident("orange", updated_at=T0 + 1), ["county"], 15)
    body = api.get(f"/tasks/{task.task_id}").json()
    assert body["task"]["status"] == "delivered" and body["task"]["incident"]["severity"] == "yellow"
    assert [d["http_status"] for d in body["deliveries"]] == [502, 200]
    # The orange update is appended to the task as a revision, queued for the county.
    assert [(n["seq"], n["kind"], n["status"]) for n in body["notifications"]] == [
        (0, "task", "sent"),
        (1, "revision", "pending"),
    ]
    assert [a["event"] for a in body["audit"]] == ["created", "delivered", "revision"]
    assert body["latest_incident"]["severity"] == "orange"
    assert api.get("/tasks/task-nope").status_code == 404


def test_acknowledge(api: TestClient, store: TaskStore):
    task = store.record_incident(incident(), ["county"], 30)[0]
    url = f"/tasks/{task.task_id}/ack"
    ok = api.post(url, json={"note": "team dispatched"})
    assert ok.status_code == 200
    assert ok.json()["status"] == "acknowledged" and ok.json()["acknowledged_by"] == "Duty officer Wang"
    again = api.post(url, json={})
    assert again.status_code == 409 and "Duty officer Wang" in again.json()["detail"]
    assert api.post("/tasks/task-nope/ack", json={}).status_code == 404
    assert api.post(url, json={"note": ""}).status_code == 422
    audit = api.get(f"/tasks/{task.task_id}").json()["audit"]
    # who (the token's holder, not a name the caller typed), from where (address and token id)
    assert audit[-1]["actor"] == "Duty officer Wang" and audit[-1]["detail"] == "team dispatched"
    assert audit[-1]["source"].startswith("testclient token tok-")


def test_stats_count_per_department_and_status(api: TestClient, store: TaskStore):
    store.record_incident(incident("orange"), ["county", "city"], 15)
    store.acknowledge(task_id_for("inc-a1", "county"), "Wang")
    stats = api.get("/stats").json()
    assert stats["tasks"] == 2
    assert stats["by_department"]["county"]["acknowledged"] == 1
    assert stats["by_department"]["city"]["new"] == 1
    assert stats["by_status"]["new"] == 1


@pytest.mark.asyncio
async def test_metrics_count_what_the_service_did(settings, routing, store, inbox):
    """/metrics serves the live counters: one bad message, one incident delivered to its three
    departments and one repeated inbox post move exactly the counters they should, by one each."""
    before = await scrape(inbox)
    store_incident(b"{not json", routing=routing, store=store)
    delivered = await process_incident(
        incident("yellow").to_json(), routing=routing, store=store, client=inbox, settings=settings
    )
    assert [t.status for t in delivered] == ["delivered"] * 3
    for _ in range(2):
        assert (await inbox.post("/inbox/fire", json={}, headers={"Idempotency-Key": "k-1"})).status_code == 200
    after = await scrape(inbox)

    moved = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after.keys() | before.keys()}
    moved = {k: v for k, v in moved.items() if v}

    def sample(name: str, **labels: str) -> tuple[str, frozenset]:
        return name, frozenset(labels.items())

    # Exactly these moved, each by one: nothing for fire (a yellow incident), no failed attempt.
    assert moved == {
        sample("safewatch_alerts_bad_incidents_total", reason="json"): 1,
        sample("safewatch_alerts_incidents_total"): 1,
        sample("safewatch_alerts_inbox_duplicates_total", department="fire"): 1,
        **{
            sample(name, department=dept, **{label: value}): 1
            for dept in ("enterprise", "county", "city")
            for name, label, value in (
                ("safewatch_alerts_tasks_created_total", "severity", "yellow"),
                ("safewatch_alerts_delivery_attempts_total", "outcome", "ok"),
                ("safewatch_alerts_deliveries_total", "result", "delivered"),
            )
        },
    }


def test_inbox_honours_idempotency_key(api: TestClient):
    before = counter("safewatch_alerts_inbox_duplicates_total", department="county")
    first = api.post("/inbox/county", json={"n": 1}, headers={"Idempotency-Key": "task-1"})
    repeat = api.post("/inbox/county", json={"n": 1}, headers={"Idempotency-Key": "task-1"})
    assert first.json()["stored"] is True
    assert repeat.status_code == 200 and repeat.json()["duplicate"] is True  # 2xx, so the sender stops retrying
    api.post("/inbox/county", json={"n": 2})  # without a key every post is kept
    api.post("/inbox/county", json={"n": 2})
    inbox = api.get("/inbox/county").json()
    assert (inbox["received"], inbox["duplicates"]) == (3, 1)
    assert [m["body"]["n"] for m in inbox["messages"]] == [1, 2, 2]
    assert inbox["messages"][0]["repeats"] == 1
    assert api.get("/inbox/city").json()["received"] == 0
    assert counter("safewatch_alerts_inbox_duplicates_total", department="county") == before + 1


def test_inbox_rejects_bad_input(api: TestClient):
    assert api.post("/inbox/county", content=b"{not json").status_code == 400
    assert api.post("/inbox/Not A Dept", json={}).status_code == 422


# --- process_incident and delivery, against the app's own demo inbox -------------------------------


@pytest.mark.asyncio
async def test_process_incident_delivers_once_and_replay_sends_nothing(settings, routing, store, inbox):
    raw = incident("yellow").to_json()
    first = await process_incident(raw, routing=routing, store=store, client=inbox, settings=settings)
    replay = await process_incident(raw, routing=routing, store=store, client=inbox, settings=settings)
    assert [(t.department, t.status) for t in first] == [
        ("enterprise", "delivered"),
        ("county", "delivered"),
        ("city", "delivered"),
    ]
    assert replay == []
    county = (await inbox.get("/inbox/county")).json()
    assert (county["received"], county["duplicates"]) == (1, 0)
    message = county["messages"][0]
    assert message["idempotency_key"] == task_id_for("inc-a1", "county") + ":webhook:0"
    assert message["body"]["task"]["task_id"] == task_id_for("inc-a1", "county")
    assert message["body"]["incident"]["incident_id"] == "inc-a1"
    assert (await inbox.get("/inbox/fire")).json()["received"] == 0


@pytest.mark.asyncio
async def test_raised_severity_gives_new_departments_a_task_and_the_others_a_revision(settings, routing, store, inbox):
    await process_incident(incident("yellow").to_json(), routing=routing, store=store, client=inbox, settings=settings)
    raised = incident("orange", updated_at=T0 + 60_000).to_json()
    new = await process_incident(raised, routing=routing, store=store, client=inbox, settings=settings)
    assert [(t.department, t.status) for t in new] == [("fire", "delivered")]
    fire = (await inbox.get("/inbox/fire")).json()["messages"]
    assert len(fire) == 1 and fire[0]["body"]["kind"] == "task"
    assert fire[0]["body"]["task"]["severity"] == "orange" and fire[0]["body"]["incident"]["severity"] == "orange"
    for dept in ("enterprise", "county", "city"):  # told at yellow, kept informed
        told = [m["body"] for m in (await inbox.get(f"/inbox/{dept}")).json()["messages"]]
        assert [(b["kind"], b["incident"]["severity"]) for b in told] == [("task", "yellow"), ("revision", "orange")]
        assert "severity yellow → orange" in told[1]["reason"]
        assert told[1]["labels"]["severity"] == "orange" and told[1]["status"] == "firing"
    # The same update again (a replay) appends and sends nothing.
    assert await process_incident(raised, routing=routing, store=store, client=inbox, settings=settings) == []
    assert (await inbox.get("/inbox/county")).json()["received"] == 2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{not json", "json"), (b'{"incident_id": "x"}', "schema"), (b"", "empty"), (b"\xff\xfe", "json")],
)
def test_bad_incident_is_counted_and_skipped(settings, routing, store, raw, reason):
    before = counter("safewatch_alerts_bad_incidents_total", reason=reason)
    assert store_incident(raw, routing=routing, store=store) == []
    assert counter("safewatch_alerts_bad_incidents_total", reason=reason) == before + 1
    assert store.list_tasks() == []


def test_unrouted_incident_is_stored_and_counted(settings, routing, store):
    before = counter("safewatch_alerts_unrouted_incidents_total")
    elsewhere = incident().model_copy(update={"region": "110105"})
    assert store_incident(elsewhere.to_json(), routing=routing, store=store) == []
    assert counter("safewatch_alerts_unrouted_incidents_total") == before + 1
    assert store.latest_incident("inc-a1")["region"] == "110105"


@pytest.mark.asyncio
async def test_stored_but_unsent_notifications_are_sent_by_the_outbox_pump(settings, routing, store, inbox):
    # As after a crash between storing the tasks (offset committed) and sending them.
    stored = store_incident(incident("blue").to_json(), routing=routing, store=store)
    assert [t.status for t in stored] == ["new", "new"]

    deliveries = Deliveries(routing=routing, store=store, client=inbox, settings=settings)
    pump = asyncio.create_task(pump_outbox(deliveries, store, asyncio.Event(), sweep_s=60))
    try:
        async with asyncio.timeout(2):  # the pump reads the outbox at once, not after its 60 s sweep
            while store.unsent():
                await asyncio.sleep(0.01)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await deliveries.close()
    assert store.unsent() == []
    assert {t.status for t in store.list_tasks()} == {"delivered"}
    assert (await inbox.get("/inbox/enterprise")).json()["received"] == 1
    assert (await inbox.get("/inbox/county")).json()["received"] == 1


# --- delivery retries, against department endpoints that misbehave ----------------------------------


def flaky(statuses: list[int], seen: list[httpx.Request]) -> httpx.AsyncClient:
    """A client whose department answers with these statuses in turn (then 200)."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses[len(seen) - 1] if len(seen) <= len(statuses) else 200
        if status == 0:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status, json={})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def run_delivery(statuses: list[int], settings, routing, store, attempts: int | None = None):
    """Send the county task's first notification (task created once) against answers `statuses`."""
    task = store.create_task(incident(), "county", 30)[0]
    [notification] = store.notifications(task.task_id)
    seen: list[httpx.Request] = []
    async with flaky(statuses, seen) as client:
        outcome = await deliver(
            notification, routing=routing, client=client, store=store, settings=settings, attempts=attempts
        )
    return outcome, store.get_task(task.task_id), seen


@pytest.mark.asyncio
async def test_delivery_retries_until_2xx(settings, routing, store):
    outcome, task, seen = await run_delivery([0, 503], settings, routing, store)
    assert outcome == "sent" and task.status == "delivered"
    assert [d.http_status for d in store.deliveries(task.task_id)] == [None, 503, 200]
    assert {r.headers["Idempotency-Key"] for r in seen} == {f"{task.task_id}:webhook:0"}
    assert seen[0].url == "http://alerts.test/inbox/county"
    body = orjson.loads(seen[0].content)
    assert body["schema"] == "safewatch.alert/v1" and body["task"]["department"] == "county"


@pytest.mark.asyncio
async def test_delivery_fails_after_the_last_retry_and_a_later_sweep_recovers(settings, routing, store):
    outcome, task, seen = await run_delivery([500] * 10, settings, routing, store)
    assert outcome == "failed" and task.delivery_status == "failed" and task.status == "new"
    assert len(seen) == settings.delivery_retries + 1
    assert store.audit(task.task_id)[-1].detail.startswith("HTTP 500")
    outcome, task, seen = await run_delivery([], settings, routing, store, attempts=1)  # what the sweep does later
    assert outcome == "sent" and task.status == "delivered" and len(seen) == 1
    assert [a.event for a in store.audit(task.task_id)] == ["created", "delivery_failed", "delivered"]


@pytest.mark.asyncio
async def test_permanent_client_error_is_not_retried(settings, routing, store):
    outcome, task, seen = await run_delivery([404], settings, routing, store)
    assert outcome == "failed" and task.delivery_status == "failed" and len(seen) == 1


@pytest.mark.asyncio
async def test_acknowledged_task_is_not_reminded(settings, routing, store):
    task = store.create_task(incident(), "county", 30)[0]
    store.acknowledge(task.task_id, "Wang")
    outcome, after, seen = await run_delivery([], settings, routing, store)
    assert outcome == "skipped" and after.status == "acknowledged" and seen == []
    [n] = store.notifications(task.task_id)
    assert n.status == "skipped" and "acknowledged before it was sent" in n.reason


@pytest.mark.asyncio
async def test_an_acknowledged_department_still_gets_revisions(settings, routing, store, inbox):
    await process_incident(incident("yellow").to_json(), routing=routing, store=store, client=inbox, settings=settings)
    store.acknowledge(task_id_for("inc-a1", "county"), "Wang")
    closed = incident("yellow", updated_at=T0 + 60_000).model_copy(update={"status": "closed", "open_hazard_ids": []})
    await process_incident(closed.to_json(), routing=routing, store=store, client=inbox, settings=settings)
    told = [m["body"] for m in (await inbox.get("/inbox/county")).json()["messages"]]
    assert [(b["kind"], b["status"]) for b in told] == [("task", "firing"), ("revision", "resolved")]
    assert told[1]["task"]["status"] == "acknowledged"
