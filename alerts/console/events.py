"""The console's live feed: server-sent events of what changed in the task store.

The store is the one place every change lands (the incident consumer, the API, escalation, the
CLI in another process), so the feed watches the store rather than each writer: every
`console_poll_s` it reads what is newer than the stream's cursor. A page refetches its view on a
`change` event; the event also carries the changes themselves for the "latest events" list.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from alerts.console.board import latest_events
from alerts.store import TaskStore

KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream


@dataclass
class Cursor:
    """How far a stream has read: the last audit row, incident receipt and report change it sent."""

    audit: int = 0
    incidents: int = 0
    reports: int = 0


def cursor_now(store: TaskStore) -> Cursor:
    """The cursor at the newest change in the store."""
    with store.reading() as db:
        audit = db.execute("SELECT COALESCE(MAX(id), 0) FROM audit").fetchone()[0]
        incidents = db.execute("SELECT COALESCE(MAX(received_at), 0) FROM incidents").fetchone()[0]
        reports = db.execute("SELECT COALESCE(MAX(updated_at), 0) FROM reports").fetchone()[0]
    return Cursor(audit, incidents, reports)


def changes_since(store: TaskStore, cursor: Cursor, enterprise_id: str | None, reports: bool) -> dict[str, Any] | None:
    """What changed after `cursor` that this caller may see (None if nothing); moves the cursor on."""
    now = cursor_now(store)
    if now == cursor:
        return None
    where, args = "received_at > ?", list[Any]([cursor.incidents])
    if enterprise_id is not None:
        where += " AND enterprise_id = ?"
        args.append(enterprise_id)
    with store.reading() as db:
        incidents = [
            dict(r)
            for r in db.execute(
                "SELECT incident_id, severity, status, json_extract(incident_json, '$.title') AS title"
                f" FROM incidents WHERE {where} ORDER BY received_at LIMIT 200",
                args,
            ).fetchall()
        ]
        changed_reports = (
            [
                dict(r)
                for r in db.execute(
                    "SELECT tracking, status, incident_id FROM reports WHERE updated_at > ?"
                    " ORDER BY updated_at LIMIT 200",
                    (cursor.reports,),
                ).fetchall()
            ]
            if reports
            else []
        )
    events = latest_events(store, enterprise_id, after=cursor.audit, limit=200)
    cursor.audit, cursor.incidents, cursor.reports = now.audit, now.incidents, now.reports
    if not (incidents or events or changed_reports):
        return None  # changes this caller may not see
    return {"incidents": incidents, "events": events, "reports": changed_reports}


def sse(event: str, data: Any) -> bytes:
    """One server-sent event."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream(
    store: TaskStore,
    *,
    enterprise_id: str | None,
    reports: bool,
    poll_s: float,
    disconnected: Callable[[], Awaitable[bool]],
    stopping: threading.Event,
) -> AsyncIterator[bytes]:
    """The event stream of one page until it goes away or the service stops."""
    cursor = await asyncio.to_thread(cursor_now, store)
    yield b"retry: 2000\n\n" + sse("hello", {"audit": cursor.audit})
    idle = 0.0
    # The service stops only when every response has ended, so a stream must notice the stop itself.
    while not stopping.is_set() and not await disconnected():
        await asyncio.sleep(poll_s)
        found = await asyncio.to_thread(changes_since, store, cursor, enterprise_id, reports)
        if found is not None:
            idle = 0.0
            yield sse("change", found)
        else:
            idle += poll_s
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield b": keepalive\n\n"
