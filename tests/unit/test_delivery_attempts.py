"""Every delivery attempt is on record, one a crash cut short too (its row is written first), on both databases."""

from __future__ import annotations

from pathlib import Path

from alerts.store import IN_FLIGHT, Outcome, Routed, TaskStore

from .test_alert_store import T0, incident


def test_an_attempt_is_recorded_before_it_is_made_and_completed_after(store_target: Path | str):
    store = TaskStore(store_target)
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


def test_an_attempt_cut_short_by_a_crash_stays_on_record(store_target: Path | str):
    store = TaskStore(store_target)
    task = store.create_task(incident(), "county", 30, now=T0)[0]
    [notification] = store.unsent()
    store.begin_attempt(notification, "http://x/inbox/county", now=T0 + 1)
    store.close()  # the service dies here, its POST perhaps already received
    again = TaskStore(store_target)
    assert again.unsent() == [notification]  # still to send: nothing says it arrived
    row, n = again.begin_attempt(notification, "http://x/inbox/county", now=T0 + 2)
    again.finish_attempt(row, http_status=200, error=None, ok=True)
    assert [(d.attempt, d.ok, d.error) for d in again.deliveries(task.task_id)] == [
        (1, False, IN_FLIGHT),
        (2, True, None),
    ]
    again.close()


def test_batched_attempts_are_logged_before_and_settled_after(store_target: Path | str):
    store = TaskStore(store_target)
    a = store.create_task(incident(), "county", 30, now=T0)[0]
    b = store.create_task(incident(), "city", 30, now=T0)[0]
    c = store.create_task(incident(), "province", 30, now=T0)[0]
    store.acknowledge(c.task_id, "Li", now=T0 + 1)  # acted on by phone: its first message is noise now
    pending = {n.task_id: n for n in store.unsent()}
    started = store.begin_attempts([(pending[t.task_id], "http://x/inbox") for t in (a, b, c)], now=T0 + 2)
    assert [(n.task_id, attempt) for n, _, _, attempt in started] == [(a.task_id, 1), (b.task_id, 1)]
    assert store.notifications(c.task_id)[0].status == "skipped"
    # Before any outcome: both attempts on record, both messages still to send (a crash here resends them).
    assert [d.error for d in store.deliveries(a.task_id)] == [IN_FLIGHT]
    assert {n.task_id for n in store.unsent()} == {a.task_id, b.task_id}
    (na, _, row_a, _), (nb, _, row_b, _) = started
    store.finish_attempts(
        [Outcome(row_a, na.id, 1, 200, None), Outcome(row_b, nb.id, 1, 503, "HTTP 503: busy")], now=T0 + 3
    )
    assert store.get_task(a.task_id).status == "delivered" and store.notifications(a.task_id)[0].status == "sent"
    assert store.notifications(b.task_id)[0].status == "pending"  # left to the retry policy
    assert [(d.http_status, d.ok) for d in store.deliveries(b.task_id)] == [(503, False)]
    assert store.begin_attempts([(na, "http://x/inbox")]) == []  # sent: never again
    store.close()


def test_a_batch_of_incidents_is_one_transaction_with_the_same_result(store_target: Path | str):
    store = TaskStore(store_target)
    batch = [
        Routed(incident(incident_id="inc-1"), ["county", "city"], 30),
        Routed(incident("red", updated_at=T0 + 5, incident_id="inc-1"), ["county", "city", "province"], 5),
        Routed(incident(incident_id="inc-2"), ["county"], 30),
    ]
    new = store.record_incidents(batch, now=T0)
    assert [(t.incident_id, t.department) for t in new] == [
        ("inc-1", "county"),
        ("inc-1", "city"),
        ("inc-1", "province"),
        ("inc-2", "county"),
    ]
    assert [n.kind for n in store.notifications(new[0].task_id)] == ["task", "revision"]
    assert store.record_incidents(batch, now=T0 + 1) == []  # a replayed batch: nothing new
    store.close()
