"""The alert service on the real broker: the scripted leak's incidents become exactly one
delivered task per routed department, at a real HTTP receiver; a replay sends nothing twice."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from alerts.auth import issue_token
from alerts.notices import as_item
from alerts.routing import load_routing, route
from alerts.store import TaskStore
from config.settings import PROJECT_ROOT
from config.topics import NOTICES_TOPIC
from rules.models import IncidentEvent, NoticeEvent

from .conftest import free_ports
from .pipeline_helpers import read_topic, spawn, stop, wait_until


class Receiver:
    """A department endpoint: records every POST it gets, answering after `delay_s`."""

    def __init__(self, delay_s: float = 0.0):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((self.path.rsplit("/", 1)[-1], self.headers.get("Idempotency-Key"), body))
                time.sleep(delay_s)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def alerts_settings(leak_run, tmp_path, receiver, group: str, store_target: Path | str | None = None):
    """The service's settings for one test; `store_target` (a fixture param) picks SQLite or PostgreSQL."""
    routing = tmp_path / "routing.yaml"
    text = (PROJECT_ROOT / "config" / "routing.yaml").read_text()
    routing.write_text(text.replace("${ALERTS_API}/inbox", f"{receiver.url}/dept"))
    return leak_run.settings.model_copy(
        update={
            "routing": routing,
            "alerts_db": tmp_path / "tasks.sqlite3",
            "alerts_db_url": store_target if isinstance(store_target, str) else None,
            "alerts_group": group,
            "alerts_port": free_ports()["alerts_port"],
            "delivery_backoff_s": 0.1,
            "session_timeout_s": 3.0,
        }
    )


def api_headers(settings) -> dict[str, str]:
    """An admin token issued in the service's store (as `safewatch alerts token issue` does)."""
    store = TaskStore(settings.alerts_store)
    try:
        _, secret = issue_token(store, "integration test", "admin")
    finally:
        store.close()
    return {"Authorization": f"Bearer {secret}"}


def items(leak_run, notices: list[dict]) -> list[IncidentEvent]:
    """What the service stores: the incidents, and each maintenance notice as its own kind of item."""
    return [IncidentEvent.model_validate(raw) for raw in leak_run.incidents] + [
        as_item(NoticeEvent.model_validate(raw)) for raw in notices
    ]


def expected_tasks(leak_run, settings, notices: list[dict] = ()) -> set[tuple[str, str]]:
    routing = load_routing(settings.routing, alerts_api=settings.alerts_api)
    out = set()
    for inc in items(leak_run, list(notices)):
        out |= {(inc.incident_id, d) for d in route(inc, routing)}
    return out


def expected_revisions(leak_run, settings, notices: list[dict] = ()) -> Counter:
    """(incident, department) → how many later events of the incident its task must be told of."""
    routing = load_routing(settings.routing, alerts_api=settings.alerts_api)
    seen: dict[tuple[str, str], int] = {}  # task → updated_at of the newest event it took in
    revisions: Counter = Counter()
    for inc in items(leak_run, list(notices)):
        for key, rev in list(seen.items()):
            if key[0] == inc.incident_id and inc.updated_at > rev:
                seen[key] = inc.updated_at
                revisions[key] += 1
        for d in route(inc, routing):
            seen.setdefault((inc.incident_id, d), inc.updated_at)
    return revisions


@pytest.mark.parametrize("store_process", [False, True], ids=["one-process", "store-process"])
def test_one_task_per_routed_department_and_replay_sends_nothing_twice(
    leak_run, tmp_path, receiver, store_target, store_process
):
    settings = alerts_settings(leak_run, tmp_path, receiver, f"it-alerts-{uuid.uuid4().hex[:6]}", store_target)
    # With the consumer in a process of its own, the replay below also checks that its counters
    # reach the service's /metrics.
    settings = settings.model_copy(update={"alerts_store_process": store_process})
    # the notices topic as it stands (the leak run's worker has stopped): the service reads it too
    notices = asyncio.run(read_topic(settings, NOTICES_TOPIC, until=lambda m: True, settle=0.5))
    want = expected_tasks(leak_run, settings, notices)
    want_revisions = expected_revisions(leak_run, settings, notices)
    maintenance = {n["notice_id"] for n in notices}
    closed = {n["notice_id"] for n in notices if n["status"] == "closed"}
    # A notice that closed before its task message went out (both in one fetch) is closed by the
    # service, so that message is skipped like any task's closed before it was sent; the revisions go.
    must = {key for key in want if key[0] not in closed}
    assert len(want) >= 3, "the leak incident should reach several departments"
    assert sum(want_revisions.values()) >= 1, "the leak incident should be updated or closed after it opened"
    headers = api_headers(settings)
    proc = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
    total = len(must) + sum(want_revisions.values())
    try:
        wait_until(lambda: len(receiver.received) >= total, 90, f"{total} deliveries (log: {tmp_path / 'alerts.log'})")
        time.sleep(2)  # anything extra would arrive now
        firsts = [(dept, key, b) for dept, key, b in receiver.received if b["kind"] == "task"]
        got = Counter((b["task"]["incident_id"], dept) for dept, _, b in firsts)
        assert must <= set(got) <= want
        assert max(got.values()) == 1, f"duplicate deliveries: {got}"
        assert all(key == f"{b['task']['task_id']}:webhook:0" for _, key, b in firsts)
        revisions = Counter(
            (b["task"]["incident_id"], dept) for dept, _, b in receiver.received if b["kind"] == "revision"
        )
        assert revisions == want_revisions
        assert max(Counter(key for _, key, _ in receiver.received).values()) == 1
        assert {b["schema"] for _, _, b in receiver.received} == {"safewatch.alert/v1"}
        assert httpx.get(f"{settings.alerts_api}/tasks", timeout=5).status_code == 401
        tasks = httpx.get(f"{settings.alerts_api}/tasks", headers=headers, timeout=5).json()
        assert {(t["incident_id"], t["department"]) for t in tasks} == want
        assert {t["status"] for t in tasks if t["incident_id"] not in maintenance} == {"delivered"}
        # a notice's task is the enterprise duty room's alone, and closes with the notice
        assert {t["department"] for t in tasks if t["incident_id"] in maintenance} <= {"enterprise-duty"}
        assert {t["status"] for t in tasks if t["incident_id"] in closed} <= {"closed"}
    finally:
        stop(proc)

    # A new consumer group re-reads every incident from the start: a replay. Same store, no new task.
    replay_settings = settings.model_copy(update={"alerts_group": settings.alerts_group + "-replay"})
    before = len(receiver.received)
    proc = spawn(replay_settings, tmp_path / "alerts.log", "alerts", "serve")
    try:
        wait_until(lambda: _consumed(replay_settings) >= len(leak_run.incidents), 60, "the replay to be read")
        time.sleep(1)
        assert len(receiver.received) == before
    finally:
        stop(proc)


def _consumed(settings) -> float:
    try:
        text = httpx.get(f"{settings.alerts_api}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("safewatch_alerts_incidents_total")
    )


def test_the_consumer_process_ends_with_a_killed_service(leak_run, tmp_path, receiver):
    settings = alerts_settings(leak_run, tmp_path, receiver, f"it-alerts-orphan-{uuid.uuid4().hex[:6]}")
    settings = settings.model_copy(update={"alerts_store_process": True})
    proc = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        wait_until(lambda: children.read_text().split(), 60, "the consumer process to start")
        child = int(children.read_text().split()[0])
        wait_until(lambda: len(receiver.received) >= 1, 90, "a first delivery")
        proc.kill()
        proc.wait()
        # Its end of the pipe closes with the service: it stops instead of storing on unattended.
        wait_until(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 20, "the consumer process to end")
        assert "the service is gone" in (tmp_path / "alerts.log").read_text()
    finally:
        stop(proc)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
