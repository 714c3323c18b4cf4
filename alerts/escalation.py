"""Escalation: a task nobody acknowledged by its deadline goes one level up the chain.

The deadlines live in the store (`tasks.next_escalation_at`), not in memory, so a restart
of the service loses no timer: the first tick after a start escalates whatever fell due
while it was down. The clock is a parameter, so tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from alerts import metrics
from alerts.routing import Routing, escalation_path
from alerts.store import Notification, Task, TaskStore, now_ms

log = logging.getLogger(__name__)


def escalate_due(store: TaskStore, routing: Routing, now: int) -> list[tuple[Task, Task | None]]:
    """Escalate every task past its deadline at `now`; returns (escalated task, task of the next level)."""
    done = []
    for task in store.due_escalations(now):
        incident = store.latest_incident(task.incident_id) or task.incident
        # Each escalation of the same task goes one level higher than the one before.
        path = escalation_path(routing, task.department, incident.get("region", ""))
        target = path[task.escalation_level] if task.escalation_level < len(path) else None
        minutes = routing.ack_minutes_for(incident.get("severity", task.severity))
        result = store.escalate(task.task_id, target, minutes, now=now, expected_level=task.escalation_level)
        if result is None:
            continue  # acknowledged (or escalated by another timer) since we looked
        metrics.ESCALATIONS.labels(task.department, target or "none").inc()
        log.info(
            "task %s (%s, incident %s) not acknowledged in time: escalated to %s",
            task.task_id,
            task.department,
            task.incident_id,
            target or "nobody (top of the chain)",
        )
        done.append(result)
    return done


async def escalate_forever(
    store: TaskStore,
    routing: Callable[[], Routing],
    on_queued: Callable[[list[Notification]], None],
    interval_s: float,
    clock: Callable[[], int] = now_ms,
) -> None:
    """Every interval: escalate what is due, release what an ended silence or a closed inhibiting
    incident held back (in worker threads), and hand the queued notifications on."""
    while True:
        try:
            now = clock()
            done = await asyncio.to_thread(escalate_due, store, routing(), now)
            released = await asyncio.to_thread(store.release_held, now)
            if released:
                log.info("released held messages: %d task(s) told what is still open", len(released))
            if done or released:
                on_queued(await asyncio.to_thread(store.unsent))
        except Exception:
            # A database hiccup must not end escalation for good; the next tick tries again.
            log.exception("escalation tick failed")
        await asyncio.sleep(interval_s)
