"""The task store, on a real SQLite file in tmp_path and on a real PostgreSQL database (`store_target`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alerts.store import AlreadyAcknowledged, TaskStore, task_id_for
from rules.models import IncidentEvent

T0 = 1_750_000_000_000
MINUTE = 60_000


def incident(
    severity: str = "yellow", updated_at: int = T0, incident_id: str = "inc-a1", status: str = "open"
) -> IncidentEvent:
    return IncidentEvent(
        incident_id=incident_id,
        status=status,
        severity=severity,
        rule_id="hazchem.gas_and_temp",
        title="Gas and temperature rise, tank area T-1",
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
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "alerts.sqlite3"


@pytest.fixture
def store(store_target: Path | str):
    s = TaskStore(store_target)
    yield s
    s.close()


def test_store_is_a_real_wal_file(db_path: Path):
    store = TaskStore(db_path)
    store.create_task(incident(), "county", 30, now=T0)
    store.close()
    assert db_path.is_file()
    other = sqlite3.connect(db_path)  # a second, independent reader sees the committed task
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT department FROM tasks").fetchall() == [("county",)]
    other.close()


def test_create_is_idempotent(store: TaskStore):
    first, created = store.create_task(incident(), "county", 30, now=T0)
    again, created_again = store.create_task(incident("red", updated_at=T0 + 5), "county", 5, now=T0 + 99)
    assert created and not created_again
    assert again == first  # the existing task, unchanged: severity, deadline and snapshot of the first
    assert first.task_id == task_id_for("inc-a1", "county")
    assert len(store.list_tasks()) == 1
    assert [a.event for a in store.audit(first.task_id)] == ["created"]


def test_task_id_is_stable_across_databases(tmp_path: Path):
    a, b = TaskStore(tmp_path / "a.db"), TaskStore(tmp_path / "b.db")
    assert a.create_task(incident(), "city", 30)[0].task_id == b.create_task(incident(), "city", 30)[0].task_id
    assert task_id_for("inc-a1", "city") != task_id_for("inc-a1", "county")
    a.close()
    b.close()


def test_record_incident_creates_only_missing_tasks(store: TaskStore):
    new = store.record_incident(incident("yellow"), ["enterprise", "county", "city"], 30, now=T0)
    assert [t.department for t in new] == ["enterprise", "county", "city"]
    assert all(t.status == "new" and t.delivery_status == "pending" and t.severity == "yellow" for t in new)
    # A replay of the same event: nothing new.
    assert store.record_incident(incident("yellow"), ["enterprise", "county", "city"], 30, now=T0 + 1) == []
    # The incident grows to red: only the departments it newly reaches get tasks.
    raised = store.record_incident(
        incident("red", updated_at=T0 + MINUTE), ["enterprise", "county", "city", "province"], 5, now=T0 + MINUTE
    )
    assert [(t.department, t.severity) for t in raised] == [("province", "red")]
    assert len(store.list_tasks(incident_id="inc-a1")) == 4


def test_ack_deadline_is_creation_plus_minutes(store: TaskStore):
    task = store.record_incident(incident("orange"), ["county"], 15, now=T0)[0]
    assert task.created_at == T0
    assert task.ack_deadline == T0 + 15 * MINUTE
    fractional = store.create_task(incident(incident_id="inc-b"), "county", 0.5, now=T0)[0]
    assert fractional.ack_deadline == T0 + 30_000


def test_latest_incident_is_refreshed_but_never_regresses(store: TaskStore):
    store.record_incident(incident("yellow", updated_at=T0), ["county"], 30, now=T0)
    store.record_incident(incident("red", updated_at=T0 + 10), ["county"], 5, now=T0 + 10)
    assert store.latest_incident("inc-a1")["severity"] == "red"
    store.record_incident(incident("yellow", updated_at=T0), ["county"], 30, now=T0 + 20)  # late replay
    assert store.latest_incident("inc-a1")["severity"] == "red"
    assert store.latest_incident("nope") is None
    # The task keeps the snapshot that created it.
    assert store.list_tasks()[0].incident["severity"] == "yellow"


def test_acknowledge(store: TaskStore):
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    acked = store.acknowledge(task.task_id, "duty officer Wang", "on our way", now=T0 + MINUTE)
    assert (acked.status, acked.acknowledged_by, acked.acknowledged_at, acked.ack_note) == (
        "acknowledged",
        "duty officer Wang",
        T0 + MINUTE,
        "on our way",
    )
    assert acked.next_escalation_at is None  # acknowledgement stops the escalation clock
    with pytest.raises(AlreadyAcknowledged) as info:
        store.acknowledge(task.task_id, "someone else")
    assert info.value.task.acknowledged_by == "duty officer Wang"
    with pytest.raises(KeyError):
        store.acknowledge("task-unknown", "x")
    trail = store.audit(task.task_id)
    assert [(a.event, a.from_status, a.to_status, a.actor) for a in trail] == [
        ("created", None, "new", "router"),
        ("acknowledged", "new", "acknowledged", "duty officer Wang"),
    ]
    assert trail[1].detail == "on our way"


def test_late_acknowledgement_is_marked_in_the_audit(store: TaskStore):
    task = store.create_task(incident(), "county", 5, now=T0)[0]
    store.acknowledge(task.task_id, "Li", None, now=T0 + 6 * MINUTE)
    assert store.audit(task.task_id)[-1].detail == "after the deadline"


def test_each_new_task_queues_its_first_notification(store: TaskStore):
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    [n] = store.notifications(task.task_id)
    assert (n.seq, n.kind, n.status, n.channel, n.department) == (0, "task", "pending", "webhook", "county")
    assert n.key == f"{task.task_id}:webhook:0"
    assert store.unsent() == [n]
    store.create_task(incident(), "county", 30, now=T0 + 1)  # a replay queues nothing more
    assert len(store.notifications(task.task_id)) == 1


def test_delivery_outcomes_move_the_task_and_the_outbox(store: TaskStore):
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    [n] = store.unsent()
    row, attempt = store.begin_attempt(n, "http://x/inbox/county", now=T0 + 1)
    store.finish_attempt(row, http_status=503, error="HTTP 503", ok=False)
    assert store.mark_failed(n.id, "HTTP 503", now=T0 + 3)
    assert store.get_task(task.task_id).delivery_status == "failed"
    assert store.get_task(task.task_id).status == "new"
    assert store.unsent(include_failed=False) == [] and [x.id for x in store.unsent()] == [n.id]
    row, attempt = store.begin_attempt(n, "http://x/inbox/county", now=T0 + 60_000)
    assert attempt == 2
    store.finish_attempt(row, http_status=200, error=None, ok=True)
    assert store.mark_sent(n.id, "HTTP 200 on attempt 2", now=T0 + 60_000)
    assert not store.mark_sent(n.id)  # once
    assert store.unsent() == []
    after = store.get_task(task.task_id)
    assert (after.status, after.delivery_status) == ("delivered", "delivered")
    assert [(d.attempt, d.http_status, d.ok) for d in store.deliveries(task.task_id)] == [
        (1, 503, False),
        (2, 200, True),
    ]
    assert [(a.event, a.from_status, a.to_status) for a in store.audit(task.task_id)] == [
        ("created", None, "new"),
        ("delivery_failed", "new", "new"),
        ("delivered", "new", "delivered"),
    ]


def test_delivery_never_overwrites_an_acknowledgement(store: TaskStore):
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    store.acknowledge(task.task_id, "Zhao", now=T0 + 1)  # acknowledged by phone before the webhook answered
    [n] = store.unsent()
    assert store.mark_sent(n.id)
    after = store.get_task(task.task_id)
    assert (after.status, after.delivery_status) == ("acknowledged", "delivered")


def test_list_filters_and_stats(store: TaskStore):
    store.record_incident(incident("orange"), ["county", "city"], 15, now=T0)
    store.record_incident(incident("blue", incident_id="inc-b2"), ["county"], 60, now=T0)
    city = task_id_for("inc-a1", "city")
    store.mark_sent(store.notifications(city)[0].id)
    assert len(store.list_tasks(department="county")) == 2
    assert [t.task_id for t in store.list_tasks(status="delivered")] == [city]
    assert len(store.list_tasks(department="county", incident_id="inc-b2")) == 1
    stats = store.stats(now=T0 + 20 * MINUTE)
    assert stats["tasks"] == 3 and stats["incidents"] == 2
    assert stats["by_status"] == {
        "new": 2,
        "delivered": 1,
        "escalated": 0,
        "acknowledged": 0,
        "in_progress": 0,
        "resolved": 0,
        "closed": 0,
    }
    assert stats["by_department"]["county"]["new"] == 2
    assert stats["outbox_unsent"] == 2
    assert stats["by_department"]["city"]["delivered"] == 1
    assert stats["overdue"] == 2  # the orange ones (15 min); the blue one has 60


def test_tasks_survive_reopening(store_target: Path | str):
    first = TaskStore(store_target)
    task = first.record_incident(incident(), ["county"], 30, now=T0)[0]
    first.close()
    reopened = TaskStore(store_target)
    assert reopened.get_task(task.task_id) == task
    assert [n.task_id for n in reopened.unsent()] == [task.task_id]  # what the service sends at startup
    assert reopened.record_incident(incident(), ["county"], 30) == []  # a replay after restart sends nothing
    reopened.close()
