"""The demo inbox: a stand-in department endpoint, used by the embedded default routing only.

`config/routing.yaml` points every department's webhook at `POST /inbox/{department}` of
the alert service itself, so the demo and the tests can see what each department received.
It is not part of production routing, where webhooks point at the departments' own systems.
Like a careful receiver it honours `Idempotency-Key`: a repeat is answered 200 and counted,
not stored twice.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel

from alerts import metrics
from alerts.store import TaskStore, now_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    department      TEXT NOT NULL,
    idempotency_key TEXT,
    received_at     INTEGER NOT NULL,
    repeats         INTEGER NOT NULL DEFAULT 0,
    body            TEXT NOT NULL,
    UNIQUE (department, idempotency_key)
);
"""
DepartmentPath = Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


class InboxMessage(BaseModel):
    """One body a department received; `repeats` counts later posts with the same key."""

    idempotency_key: str | None
    received_at: int
    repeats: int
    body: Any


class Inbox(BaseModel):
    """What one department received."""

    department: str
    received: int
    duplicates: int
    messages: list[InboxMessage]


def ensure_schema(store: TaskStore) -> None:
    """Create the inbox table in the task store's database."""
    with store.transaction() as db:
        db.execute(SCHEMA)


def receive(store: TaskStore, department: str, key: str | None, body: Any, now: int | None = None) -> bool:
    """Store a received body; False (and a repeat counted) when its key was seen before."""
    now = now_ms() if now is None else now
    with store.transaction() as db:
        cursor = db.execute(
            "INSERT INTO inbox (department, idempotency_key, received_at, body) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (department, key, now, orjson.dumps(body).decode()),
        )
        if cursor.rowcount == 1:
            return True
        db.execute(
            "UPDATE inbox SET repeats = repeats + 1 WHERE department = ? AND idempotency_key = ?", (department, key)
        )
    return False


def read_inbox(store: TaskStore, department: str, limit: int = 1000) -> Inbox:
    """The messages a department received, oldest first, with totals."""
    with store.reading() as db:
        received, duplicates = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(repeats), 0) FROM inbox WHERE department = ?", (department,)
        ).fetchone()
        rows = db.execute(
            "SELECT idempotency_key, received_at, repeats, body FROM inbox WHERE department = ? ORDER BY id LIMIT ?",
            (department, limit),
        ).fetchall()
    messages = [
        InboxMessage(idempotency_key=r[0], received_at=r[1], repeats=r[2], body=orjson.loads(r[3])) for r in rows
    ]
    return Inbox(department=department, received=received, duplicates=duplicates, messages=messages)


def inbox_router(store: TaskStore) -> APIRouter:
    """`POST /inbox/{department}` and `GET /inbox/{department}` (demo stand-in, see module doc)."""
    router = APIRouter(prefix="/inbox", tags=["demo inbox (stand-in department endpoint)"])

    @router.post("/{department}")
    async def post_inbox(request: Request, department: str = DepartmentPath) -> dict[str, Any]:
        """Receive a delivery as a department would; repeats of an Idempotency-Key are not stored."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"body is not JSON: {exc}") from None
        key = request.headers.get("Idempotency-Key")
        stored = receive(store, department, key, body)
        if not stored:
            metrics.INBOX_DUPLICATES.labels(department).inc()
        return {"department": department, "stored": stored, "duplicate": not stored}

    @router.get("/{department}", response_model=Inbox)
    def get_inbox(department: str = DepartmentPath, limit: int = Query(1000, ge=1, le=100_000)) -> Inbox:
        """What a department received, oldest first."""
        return read_inbox(store, department, limit)

    return router
