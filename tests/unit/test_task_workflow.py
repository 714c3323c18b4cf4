"""The task workflow on a real SQLite store: every step, every refusal, an audit row for each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alerts.schema import SCHEMA_VERSION, V1
from alerts.store import AlreadyAcknowledged, TaskStore, TransitionRefused, task_id_for

from .test_alert_store import MINUTE, T0, incident

WHERE = "10.0.0.7 token tok-1"


@pytest.fixture
def store(store_target: Path | str):
    s = TaskStore(store_target)  # a SQLite file, then a PostgreSQL database
    yield s
    s.close()


def test_whole_life_of_a_task(store: TaskStore):
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    store.mark_sent(store.unsent()[0].id, "HTTP 200", now=T0 + 1)
    store.acknowledge(task.task_id, "Wang", "seen", WHERE, now=T0 + 2)
    assigned = store.assign(task.task_id, "Engineer Li", "Wang", WHERE, now=T0 + 3)
    assert (assigned.status, assigned.assignee) == ("in_progress", "Engineer Li")
    store.add_note(task.task_id, "Li on site, valve closed", "Wang", WHERE, now=T0 + 4)
    store.resolve(task.task_id, "Wang", "gas back to 0 %LEL", WHERE, now=T0 + 5)
    closed = store.close_task(task.task_id, "Zhao", None, "10.0.0.8 token tok-2", now=T0 + 6)
    assert closed.status == "closed"
    trail = [(a.event, a.from_status, a.to_status, a.actor, a.source, a.at) for a in store.audit(task.task_id)]
    assert trail == [
        ("created", None, "new", "router", None, T0),
        ("delivered", "new", "delivered", "delivery", None, T0 + 1),
        ("acknowledged", "delivered", "acknowledged", "Wang", WHERE, T0 + 2),
        ("assigned", "acknowledged", "in_progress", "Wang", WHERE, T0 + 3),
        ("note", "in_progress", "in_progress", "Wang", WHERE, T0 + 4),
        ("resolved", "in_progress", "resolved", "Wang", WHERE, T0 + 5),
        ("closed", "resolved", "closed", "Zhao", "10.0.0.8 token tok-2", T0 + 6),
    ]


@pytest.mark.parametrize(
    ("step", "needs"),
    [
        (lambda s, t: s.assign(t, "Li", "Wang"), "acknowledged"),
        (lambda s, t: s.resolve(t, "Wang"), "acknowledged"),
        (lambda s, t: s.close_task(t, "Wang"), "resolved"),
        (lambda s, t: s.hand_over(t, "city", 30, "Wang"), "acknowledged"),
    ],
)
def test_steps_out_of_order_are_refused_and_change_nothing(store: TaskStore, step, needs):
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    with pytest.raises(TransitionRefused) as info:
        step(store, task.task_id)
    assert needs in str(info.value) and info.value.task.status == "new"
    assert store.get_task(task.task_id) == task
    assert len(store.audit(task.task_id)) == 1


def test_unknown_task_is_a_key_error(store: TaskStore):
    for step in (
        lambda: store.acknowledge("task-x", "Wang"),
        lambda: store.assign("task-x", "Li", "Wang"),
        lambda: store.add_note("task-x", "n", "Wang"),
        lambda: store.close_task("task-x", "Wang"),
    ):
        with pytest.raises(KeyError):
            step()


def test_acknowledged_twice_and_notes_after_closing_are_refused(store: TaskStore):
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    store.acknowledge(task.task_id, "Wang")
    with pytest.raises(AlreadyAcknowledged):
        store.acknowledge(task.task_id, "Li")
    store.resolve(task.task_id, "Wang")
    store.close_task(task.task_id, "Wang")
    with pytest.raises(TransitionRefused, match="closed"):
        store.add_note(task.task_id, "late", "Wang")


def test_hand_over_gives_the_other_department_a_task_and_a_notification(store: TaskStore):
    mine = store.create_task(incident(), "county", 30, now=T0)[0]
    store.acknowledge(mine.task_id, "Wang", now=T0 + 1)
    after, theirs = store.hand_over(mine.task_id, "city", 15, "Wang", WHERE, "needs the city's HAZMAT team", now=T0 + 2)
    assert theirs.task_id == task_id_for("inc-a1", "city") and theirs.status == "new"
    assert theirs.ack_deadline == T0 + 2 + 15 * MINUTE
    [n] = store.notifications(theirs.task_id)
    assert n.kind == "handover" and "handed over from county by Wang" in n.reason
    assert after.assignee == "department city" and after.status == "acknowledged"
    assert store.audit(mine.task_id)[-1].detail == "handed over to city: needs the city's HAZMAT team"
    # Handing over again to a department that has its task: it is notified again, not duplicated.
    store.hand_over(mine.task_id, "city", 15, "Wang", now=T0 + 3)
    assert [x.seq for x in store.notifications(theirs.task_id)] == [0, 1]
    with pytest.raises(TransitionRefused, match="already belongs"):
        store.hand_over(mine.task_id, "county", 15, "Wang")


# --- schema versions and migrations ---------------------------------------------------------------


def test_a_store_of_the_previous_release_is_migrated(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(V1)  # what the release before this one created (user_version 0)
    inc = incident().to_json().decode()
    rows = [("t-new", "pending"), ("t-fail", "failed"), ("t-done", "delivered"), ("t-ack", "acknowledged")]
    for task_id, status in rows:
        old.execute(
            "INSERT INTO tasks (task_id, incident_id, department, severity, status, created_at, updated_at,"
            " ack_deadline, incident_json) VALUES (?, ?, ?, 'yellow', ?, ?, ?, ?, ?)",
            (task_id, "inc-a1", task_id, status, T0, T0, T0 + 30 * MINUTE, inc),
        )
        old.execute(
            "INSERT INTO audit (task_id, at, event, to_status, actor) VALUES (?, ?, 'created', 'pending', 'router')",
            (task_id, T0),
        )
    old.execute(
        "INSERT INTO deliveries (task_id, attempt, at, url, http_status, ok) VALUES ('t-done', 1, ?, 'u', 200, 1)",
        (T0,),
    )
    old.execute("INSERT INTO incidents VALUES ('inc-a1', 'yellow', 'open', ?, ?, ?)", (T0, T0, inc))
    old.commit()
    old.close()

    store = TaskStore(path)
    assert store.migrated_from == 0
    got = {t.task_id: (t.status, t.delivery_status, t.next_escalation_at) for t in store.list_tasks()}
    assert got == {
        "t-new": ("new", "pending", T0 + 30 * MINUTE),
        "t-fail": ("new", "failed", T0 + 30 * MINUTE),
        "t-done": ("delivered", "delivered", T0 + 30 * MINUTE),
        "t-ack": ("acknowledged", "pending", None),  # acknowledged: no more escalation
    }
    assert all(t.enterprise_id == "91320583MA1XXXXXX0" for t in store.list_tasks())
    assert all(t.incident_rev == T0 and t.send_resolved for t in store.list_tasks())  # version 3
    # Undelivered tasks of the old release are in the outbox, to be sent after the upgrade.
    assert sorted(n.task_id for n in store.unsent()) == ["t-ack", "t-fail", "t-new"]
    assert store.audit("t-new")[0].source is None  # old rows kept, new column empty
    assert store.list_incidents(enterprise_id="91320583MA1XXXXXX0")[0]["incident_id"] == "inc-a1"
    store.close()
    again = TaskStore(path)  # opening a current store migrates nothing
    assert again.migrated_from == SCHEMA_VERSION
    again.close()


def test_a_store_newer_than_this_release_is_refused(tmp_path: Path):
    path = tmp_path / "new.sqlite3"
    TaskStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this release"):
        TaskStore(path)
