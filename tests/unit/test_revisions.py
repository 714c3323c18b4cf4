"""Grouping and revisions on a real store: one task per (incident, department) for the whole
life of an incident; every newer event is appended to each task and queued for its department."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.store import TaskStore, task_id_for

from .test_alert_store import MINUTE, T0, incident


@pytest.fixture
def store(store_target: Path | str):
    s = TaskStore(store_target)  # a SQLite file, then a PostgreSQL database
    yield s
    s.close()


def kinds(store: TaskStore, department: str) -> list[tuple[str, str]]:
    return [(n.kind, n.incident["status"]) for n in store.notifications(task_id_for("inc-a1", department))]


def test_an_incident_life_is_one_task_per_department_with_its_revisions(store):
    store.record_incident(incident("yellow", T0), ["county"], 30, now=T0)
    store.record_incident(incident("orange", T0 + MINUTE, status="update"), ["county", "city"], 15, now=T0 + MINUTE)
    closed = incident("orange", T0 + 2 * MINUTE, status="closed")
    store.record_incident(closed, ["county", "city"], 15, now=T0 + 2 * MINUTE)
    assert len(store.list_tasks()) == 2
    assert kinds(store, "county") == [("task", "open"), ("revision", "update"), ("revision", "closed")]
    assert kinds(store, "city") == [("task", "update"), ("revision", "closed")]  # joined at orange
    reasons = [n.reason for n in store.notifications(task_id_for("inc-a1", "county"))]
    assert reasons[1].startswith("severity yellow → orange")
    assert reasons[2].startswith("all clear: the incident is closed")
    trail = [(a.event, a.detail) for a in store.audit(task_id_for("inc-a1", "county"))]
    assert [e for e, _ in trail] == ["created", "revision", "revision"]


def test_replayed_and_late_events_append_nothing(store):
    store.record_incident(incident("yellow", T0), ["county"], 30, now=T0)
    update = incident("orange", T0 + MINUTE, status="update")
    store.record_incident(update, ["county"], 15, now=T0 + MINUTE)
    store.record_incident(update, ["county"], 15, now=T0 + 2 * MINUTE)  # the same event again
    store.record_incident(incident("yellow", T0), ["county"], 30, now=T0 + 3 * MINUTE)  # an older one, late
    assert kinds(store, "county") == [("task", "open"), ("revision", "update")]


def test_all_clear_is_not_sent_where_the_route_says_so(store):
    store.record_incident(incident("yellow", T0), ["county", "city"], 30, now=T0, send_resolved={"city": False})
    store.record_incident(incident("yellow", T0 + MINUTE, status="closed"), ["county", "city"], 30, now=T0 + MINUTE)
    assert kinds(store, "county") == [("task", "open"), ("revision", "closed")]
    assert kinds(store, "city") == [("task", "open")]
    assert "not notified: its route has send_resolved false" in store.audit(task_id_for("inc-a1", "city"))[-1].detail
    assert store.get_task(task_id_for("inc-a1", "city")).send_resolved is False


def test_worse_severity_brings_an_unacknowledged_deadline_forward(store):
    store.record_incident(incident("blue", T0), ["county", "city"], 60, now=T0)
    store.acknowledge(task_id_for("inc-a1", "city"), "Wang", now=T0 + 1)
    store.record_incident(incident("red", T0 + MINUTE, status="update"), ["county", "city"], 5, now=T0 + MINUTE)
    county = store.get_task(task_id_for("inc-a1", "county"))
    assert county.next_escalation_at == T0 + 6 * MINUTE  # red's 5 minutes from now, not blue's 60 from creation
    assert store.get_task(task_id_for("inc-a1", "city")).next_escalation_at is None  # acknowledged: no clock
    # An acknowledged department is still kept informed.
    assert kinds(store, "city") == [("task", "open"), ("revision", "update")]
