"""Hand a task to its department: HTTP POST to the webhook, retried with exponential backoff.

Every attempt is recorded before it is made (and its outcome after), so an attempt cut short
by a crash is still on record. The `Idempotency-Key: <task_id>` header lets receivers drop the
repeats that at-least-once delivery (a retry after a lost response, a restart) can cause.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import orjson

from alerts import metrics
from alerts.routing import Routing
from alerts.store import Task, TaskStore
from config.settings import Settings

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0


def delivery_body(task: Task, store: TaskStore) -> bytes:
    """The JSON a department receives: the task and the newest event of its incident."""
    incident = store.latest_incident(task.incident_id) or task.incident
    return orjson.dumps({"task": task.model_dump(exclude={"incident"}), "incident": incident})


def is_permanent(status: int) -> bool:
    """A 4xx other than timeout/too-many-requests will not get better by repeating the request."""
    return 400 <= status < 500 and status not in (408, 425, 429)


async def deliver(
    task: Task,
    *,
    routing: Routing,
    client: httpx.AsyncClient,
    store: TaskStore,
    settings: Settings,
    attempts: int | None = None,
) -> Task:
    """Deliver one task (default 1 + settings.delivery_retries attempts); returns it as stored after."""
    attempts = settings.delivery_retries + 1 if attempts is None else attempts
    department = routing.departments.get(task.department)
    if department is None:
        # The routing file changed since the task was created; keep the task visible as failed.
        store.mark_failed(task.task_id, f"department {task.department!r} is not in the routing file")
        return store.get_task(task.task_id) or task
    url = department.webhook
    headers = {"Content-Type": "application/json", "Idempotency-Key": task.task_id}
    last_error = "no attempt made"
    for n in range(attempts):
        current = store.get_task(task.task_id)
        if current is None or current.status not in ("pending", "failed"):
            return current or task  # acknowledged or delivered meanwhile: nothing left to do
        status, error = None, None
        row, attempt = store.begin_attempt(task.task_id, url)
        try:
            response = await client.post(
                url, content=delivery_body(current, store), headers=headers, timeout=settings.delivery_timeout_s
            )
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        ok = error is None
        store.finish_attempt(row, http_status=status, error=error, ok=ok)
        metrics.DELIVERY_ATTEMPTS.labels(task.department, "ok" if ok else "error").inc()
        if ok:
            store.mark_delivered(task.task_id, f"HTTP {status} on attempt {attempt}")
            metrics.DELIVERIES.labels(task.department, "delivered").inc()
            return store.get_task(task.task_id) or task
        last_error = error or ""
        log.warning("delivery of %s to %s failed (attempt %d): %s", task.task_id, task.department, attempt, error)
        if status is not None and is_permanent(status):
            break
        if n + 1 < attempts:
            await asyncio.sleep(min(settings.delivery_backoff_s * 2**n, MAX_BACKOFF_S))
    if store.mark_failed(task.task_id, last_error):
        metrics.DELIVERIES.labels(task.department, "failed").inc()
    return store.get_task(task.task_id) or task
