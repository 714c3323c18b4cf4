"""Every delivery attempt is on record, including one a crash cut short (its row is written first)."""

from __future__ import annotations

from pathlib import Path

from alerts.store import IN_FLIGHT, TaskStore

from .test_alert_store import T0, incident


def test_an_attempt_is_recorded_before_it_is_made_and_completed_after(tmp_path: Path):
    store = TaskStore(tmp_path / "alerts.sqlite3")
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    [notification] = store.unsent()
    row, n = store.begin_attempt(notification, "http://x/inbox/county", now=T0 + 1)
    assert n == 1
    [d] = store.deliveries(task.task_id)
    assert (d.ok, d.error, d.http_status) == (False, IN_FLIGHT, None)
    store.finish_attempt(row, http_status=200, error=None, ok=True)
    [d] = store.deliveries(task.task_id)
    assert (d.ok, d.error, d.http_status) == (True, None, 200)
    store.close()


def test_an_attempt_cut_short_by_a_crash_stays_on_record(tmp_path: Path):
    path = tmp_path / "alerts.sqlite3"
    store = TaskStore(path)
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    [notification] = store.unsent()
    store.begin_attempt(notification, "http://x/inbox/county", now=T0 + 1)
    store.close()  # the service dies here, its POST perhaps already received
    again = TaskStore(path)
    assert again.unsent() == [notification]  # still to send: nothing says it arrived
    row, n = again.begin_attempt(notification, "http://x/inbox/county", now=T0 + 2)
    again.finish_attempt(row, http_status=200, error=None, ok=True)
    assert [(d.attempt, d.ok, d.error) for d in again.deliveries(task.task_id)] == [
        (1, False, IN_FLIGHT),
        (2, True, None),
    ]
    again.close()
