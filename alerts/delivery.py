"""Send one outbox notification to its department on its channel (webhook POST or email over
SMTP), with one retry policy (tenacity: exponential backoff with jitter) for every transient failure.

Every attempt is recorded before it is made (and its outcome after), so an attempt cut short
by a crash is still on record. The `Idempotency-Key: <task>:<channel>:<seq>` header lets
receivers drop the repeats that at-least-once delivery (a retry after a lost response, a
restart) can cause. Store calls run in worker threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import aiohttp
import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from alerts import metrics
from alerts.email import email_message, send_email
from alerts.payload import encode, webhook_body
from alerts.robots import (
    dingtalk_body,
    feishu_body,
    redact_url,
    robot_answer_ok,
    signed_dingtalk_url,
    sms_body,
    wecom_body,
)
from alerts.routing import Department, Robot, Routing
from alerts.signing import sign
from alerts.store import UNACKNOWLEDGED, Notification, Outcome, Task, TaskStore
from config.settings import Settings

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0


class DeliveryFailed(Exception):
    """One attempt did not reach the department; `permanent` ones are not retried."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def is_permanent(status: int) -> bool:
    """A 4xx other than timeout/too-many-requests will not get better by repeating the request."""
    return 400 <= status < 500 and status not in (408, 425, 429)


def retry_policy(settings: Settings, attempts: int) -> AsyncRetrying:
    """The one retry policy of every channel: `attempts` tries, exponential backoff with jitter."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(
            multiplier=settings.delivery_backoff_s, max=MAX_BACKOFF_S, jitter=settings.delivery_backoff_s
        ),
        retry=retry_if_exception(lambda exc: isinstance(exc, DeliveryFailed) and not exc.permanent),
        reraise=True,
    )


async def deliver(
    notification: Notification,
    *,
    routing: Routing,
    client: httpx.AsyncClient,
    store: TaskStore,
    settings: Settings,
    attempts: int | None = None,
) -> str:
    """Send one notification (default 1 + settings.delivery_retries attempts); returns its final
    outbox status: sent, failed or skipped."""
    attempts = settings.delivery_retries + 1 if attempts is None else attempts
    department = routing.departments.get(notification.department)
    if department is None:
        # The routing file changed since the task was created; keep it visible as failed.
        await asyncio.to_thread(
            store.mark_failed, notification.id, f"department {notification.department!r} is not in the routing file"
        )
        return "failed"
    try:
        async for attempt in retry_policy(settings, attempts):
            with attempt:
                outcome = await _attempt(notification, department, client=client, store=store, settings=settings)
                if outcome != "sent":
                    return outcome  # sent or skipped by someone else meanwhile
    except DeliveryFailed as exc:
        if await asyncio.to_thread(store.mark_failed, notification.id, str(exc)):
            metrics.DELIVERIES.labels(notification.department, "failed").inc()
        log.warning("notification %s to %s failed: %s", notification.key, notification.department, exc)
        return "failed"
    return "sent"


async def deliver_webhooks(
    notifications: list[Notification],
    *,
    routing: Routing,
    session: aiohttp.ClientSession,
    store: TaskStore,
    settings: Settings,
    limit: asyncio.Semaphore,
) -> list[Notification]:
    """First attempts of many webhook notifications: every attempt row in one transaction before
    any POST, the POSTs concurrently (at most `limit`), their outcomes group-committed as they
    come (each write takes every outcome that arrived during the previous one), so a message is
    marked sent within a commit of its answer. Returns those that failed in a way worth
    retrying, for `deliver` and its retry policy."""
    by_name = {n.department: routing.departments[n.department] for n in notifications}
    departments = {n.id: by_name[n.department] for n in notifications}
    # Per department, not per message: a batch holds hundreds of messages to a few dozen.
    urls = {name: redact_url(d.webhook or "") for name, d in by_name.items()}
    secrets = {name: d.secret for name, d in by_name.items()}
    wanted = [(n, urls[n.department]) for n in notifications]
    started = await asyncio.to_thread(store.begin_attempts, wanted)
    unsettled: list[Outcome] = []
    settling: list[asyncio.Task] = []

    async def settle() -> None:
        while unsettled:
            chunk = unsettled[:]
            unsettled.clear()
            await asyncio.to_thread(store.finish_attempts, chunk)

    async def post(n: Notification, task: Task, row: int, attempt: int) -> tuple[Outcome, bool]:
        body = encode(webhook_body(n, task, settings.alerts_api))
        async with limit:
            headers = _headers(secrets[n.department], n, body)  # signed when sent, not when queued
            status, error, permanent = await _post_fast(departments[n.id], headers, body, session, settings)
        outcome = Outcome(row, n.id, attempt, status, error)
        unsettled.append(outcome)
        if not settling or settling[-1].done():
            settling.append(asyncio.create_task(settle()))
        return outcome, permanent

    try:
        results = await asyncio.gather(*(post(*s) for s in started))
    finally:
        # Even when stopping: what was answered is written down, so it is not sent again.
        await asyncio.gather(*settling, return_exceptions=True)
    if unsettled or any(t.cancelled() or t.exception() for t in settling):
        raise RuntimeError("outcomes of a webhook batch could not be stored; the sweep sends them again")
    retry = []
    delivered: Counter[str] = Counter()
    for (n, *_), (o, permanent) in zip(started, results, strict=True):
        if o.error is None:
            delivered[n.department] += 1
            continue
        metrics.DELIVERY_ATTEMPTS.labels(n.department, "error").inc()
        log.warning("delivery of %s to %s failed (attempt %d): %s", n.key, n.department, o.attempt, o.error)
        if not permanent:
            retry.append(n)
        elif await asyncio.to_thread(store.mark_failed, n.id, o.error):
            metrics.DELIVERIES.labels(n.department, "failed").inc()
    for department, count in delivered.items():  # a metric child per department, not per message
        metrics.DELIVERY_ATTEMPTS.labels(department, "ok").inc(count)
        metrics.DELIVERIES.labels(department, "delivered").inc(count)
    return retry


async def _attempt(
    notification: Notification,
    department: Department,
    *,
    client: httpx.AsyncClient,
    store: TaskStore,
    settings: Settings,
) -> str:
    """One POST; returns 'sent', or the outbox status that made it unnecessary; raises DeliveryFailed."""
    current = await asyncio.to_thread(store.get_notification, notification.id)
    if current is None or current.status in ("sent", "skipped"):
        return "done" if current is None else current.status
    task = await asyncio.to_thread(store.get_task, notification.task_id)
    assert task is not None
    if notification.kind in ("task", "escalation") and task.status not in UNACKNOWLEDGED:
        # Someone acted (perhaps by phone) before the webhook went out: a reminder is noise now.
        await asyncio.to_thread(store.mark_skipped, notification.id, f"task {task.status} before it was sent")
        return "skipped"
    payload = webhook_body(current, task, settings.alerts_api)
    if current.channel == "email" and department.email:
        target = "mailto:" + ",".join(department.email)
        row, n = await asyncio.to_thread(store.begin_attempt, current, target)
        message = email_message(current, task, payload, settings, department.email)
        status, error, permanent = await asyncio.to_thread(send_email, settings, message)
    elif current.channel == "webhook" and department.webhook:
        row, n = await asyncio.to_thread(store.begin_attempt, current, redact_url(department.webhook))
        status, error, permanent = await _post(department, current, encode(payload), client, settings)
    elif (robot := department.robot(current.channel)) is not None:
        url, robot_body = _robot_request(current.channel, robot, payload)
        row, n = await asyncio.to_thread(store.begin_attempt, current, redact_url(url))
        status, error, permanent = await _post_json(
            url, orjson.dumps(robot_body), {}, client, settings, robot_kind=current.channel
        )
    elif current.channel == "sms" and department.sms:
        if not settings.sms_gateway_url:
            raise DeliveryFailed("no SMS gateway is configured (SAFEWATCH_SMS_GATEWAY_URL)", permanent=True)
        headers = {"Idempotency-Key": current.key}
        if settings.sms_gateway_token:
            headers["Authorization"] = f"Bearer {settings.sms_gateway_token}"
        row, n = await asyncio.to_thread(store.begin_attempt, current, redact_url(settings.sms_gateway_url))
        body = orjson.dumps(sms_body(payload, department.sms, current.key))
        status, error, permanent = await _post_json(settings.sms_gateway_url, body, headers, client, settings)
    else:
        # The routing changed: this department no longer has the channel the message was queued for.
        raise DeliveryFailed(f"department {department.name!r} has no {current.channel} channel now", permanent=True)
    ok = error is None
    await asyncio.to_thread(store.finish_attempt, row, http_status=status, error=error, ok=ok)
    metrics.DELIVERY_ATTEMPTS.labels(notification.department, "ok" if ok else "error").inc()
    if not ok:
        log.warning("delivery of %s to %s failed (attempt %d): %s", current.key, notification.department, n, error)
        raise DeliveryFailed(error or "", permanent=permanent)
    reply = f"SMTP {status}" if current.channel == "email" else f"HTTP {status}"  # SMTP reply code for email
    await asyncio.to_thread(store.mark_sent, notification.id, f"{reply} on attempt {n}")
    metrics.DELIVERIES.labels(notification.department, "delivered").inc()
    return "sent"


async def _post(
    department: Department, notification: Notification, body: bytes, client: httpx.AsyncClient, settings: Settings
) -> tuple[int | None, str | None, bool]:
    """One webhook POST: (HTTP status, error or None, whether the error is permanent)."""
    assert department.webhook is not None
    try:
        response = await client.post(
            department.webhook,
            content=body,
            headers=_headers(department.secret, notification, body),
            timeout=settings.delivery_timeout_s,
        )
    except httpx.HTTPError as exc:
        return None, (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), False
    if response.is_success:
        return response.status_code, None, False
    return (
        response.status_code,
        f"HTTP {response.status_code}: {response.text[:200]}",
        is_permanent(response.status_code),
    )


def _headers(secret: str | None, notification: Notification, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Idempotency-Key": notification.key}
    if secret:
        headers |= sign(secret, int(time.time()), body)  # a fresh timestamp on every attempt
    return headers


async def _post_fast(
    department: Department, headers: dict[str, str], body: bytes, session: aiohttp.ClientSession, settings: Settings
) -> tuple[int | None, str | None, bool]:
    """`_post` through aiohttp: the batched first attempts' client. On this project's 2 cores it
    POSTs ~9,800 small JSON bodies/s to a local receiver where httpx manages ~400 to 1,600."""
    assert department.webhook is not None
    try:
        async with session.post(
            department.webhook,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=settings.delivery_timeout_s),
        ) as response:
            answer = await response.read()  # read whole, so the connection goes back to the pool
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), False
    if 200 <= response.status < 300:
        return response.status, None, False
    text = answer.decode(errors="replace")
    return response.status, f"HTTP {response.status}: {text[:200]}", is_permanent(response.status)


def _robot_request(kind: str, robot: Robot, payload: dict) -> tuple[str, dict]:
    """The URL and JSON body of one robot message, signed as its vendor wants it."""
    now = time.time()
    if kind == "wecom":
        return robot.target, wecom_body(payload)
    if kind == "dingtalk":
        return signed_dingtalk_url(robot.target, robot.secret, int(now * 1000)), dingtalk_body(
            payload, robot.at_mobiles
        )
    return robot.target, feishu_body(payload, robot.secret, int(now))


async def _post_json(
    url: str,
    body: bytes,
    headers: dict[str, str],
    client: httpx.AsyncClient,
    settings: Settings,
    robot_kind: str | None = None,
) -> tuple[int | None, str | None, bool]:
    """POST JSON; for a robot, its answer's code decides (robots answer 200 when they refuse).
    Errors never quote the URL: robot keys travel in it."""
    try:
        response = await client.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=settings.delivery_timeout_s,
        )
    except httpx.HTTPError as exc:
        return None, type(exc).__name__, False
    if not response.is_success:
        return (
            response.status_code,
            f"HTTP {response.status_code}: {response.text[:200]}",
            is_permanent(response.status_code),
        )
    if robot_kind is not None:
        try:
            refused = robot_answer_ok(robot_kind, response.json())
        except ValueError:
            refused = f"{robot_kind} answered {response.text[:100]!r}, not JSON"
        if refused:
            # A refusal may be a rate limit (robots allow about 20 messages a minute): retried.
            return response.status_code, refused, False
    return response.status_code, None, False
