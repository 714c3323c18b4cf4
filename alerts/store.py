"""The dispatch-task store: SQLite (WAL) tables of tasks, delivery attempts, audit and incidents.

A task is one department's job on one incident. `UNIQUE(incident_id, department)` makes
creating a task idempotent, which is what keeps a replayed incident from sending a second task.
Times are epoch milliseconds (wall clock of the alert service).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from rules.models import IncidentEvent, stable_id

TaskStatus = Literal["pending", "delivered", "failed", "acknowledged"]
STATUSES: tuple[str, ...] = ("pending", "delivered", "failed", "acknowledged")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id         TEXT PRIMARY KEY,
    incident_id     TEXT NOT NULL,
    department      TEXT NOT NULL,
    severity        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'acknowledged')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    ack_deadline    INTEGER NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at INTEGER,
    ack_note        TEXT,
    incident_json   TEXT NOT NULL,
    UNIQUE (incident_id, department)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
CREATE INDEX IF NOT EXISTS tasks_department ON tasks (department, status);
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL REFERENCES tasks (task_id),
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    url         TEXT NOT NULL,
    http_status INTEGER,
    error       TEXT,
    ok          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_task ON deliveries (task_id);
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL REFERENCES tasks (task_id),
    at          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS audit_task ON audit (task_id);
CREATE TABLE IF NOT EXISTS incidents (
    incident_id   TEXT PRIMARY KEY,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    incident_json TEXT NOT NULL
);
"""


class Task(BaseModel):
    """One department's job on one incident."""

    task_id: str
    incident_id: str
    department: str
    severity: str  # the incident's severity when the task was created
    status: TaskStatus
    created_at: int
    updated_at: int
    ack_deadline: int
    acknowledged_by: str | None = None
    acknowledged_at: int | None = None
    ack_note: str | None = None
    incident: dict[str, Any]  # snapshot of the incident event that created the task


# What an attempt row says until its outcome is known; left so by a crash during the attempt.
IN_FLIGHT = "no outcome recorded: the service stopped during this attempt, or it is still in flight"


class Delivery(BaseModel):
    """One HTTP attempt to hand a task to its department."""

    task_id: str
    attempt: int
    at: int
    url: str
    http_status: int | None
    error: str | None
    ok: bool


class AuditEntry(BaseModel):
    """One state change of a task, with who caused it."""

    task_id: str
    at: int
    event: str
    from_status: str | None
    to_status: str
    actor: str
    detail: str | None


class AlreadyAcknowledged(Exception):
    """The task was acknowledged before; `task` holds who did it and when."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task.task_id} already acknowledged by {task.acknowledged_by}")
        self.task = task


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def task_id_for(incident_id: str, department: str) -> str:
    """The task id: the same incident and department always give the same id."""
    return stable_id("task", incident_id, department)


class TaskStore:
    """Tasks, deliveries, audit and the latest incident events in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the consumer, the delivery tasks and the API's worker
        # threads; the lock serialises them (SQLite writes are serial anyway).
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a stored task must survive power loss, because the Kafka offset is committed
        # right after it and the incident will not be read again.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (also used by the demo inbox's tables)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads."""
        with self._lock:
            yield self._db

    # --- incidents and task creation ----------------------------------------------------------

    def record_incident(
        self, incident: IncidentEvent, departments: list[str], ack_minutes: float, now: int | None = None
    ) -> list[Task]:
        """Keep the incident's latest event and create the missing tasks; returns only new tasks."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            _save_incident(db, incident, now)
            created = [
                task
                for task, is_new in (_create_task(db, incident, d, ack_minutes, now) for d in departments)
                if is_new
            ]
        return created

    def create_task(
        self, incident: IncidentEvent, department: str, ack_minutes: float, now: int | None = None
    ) -> tuple[Task, bool]:
        """Create one task, or return the existing one for this incident and department (False)."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            return _create_task(db, incident, department, ack_minutes, now)

    def latest_incident(self, incident_id: str) -> dict[str, Any] | None:
        """The newest event seen of an incident (by its updated_at), as a dict."""
        with self.reading() as db:
            row = db.execute("SELECT incident_json FROM incidents WHERE incident_id = ?", (incident_id,)).fetchone()
        return orjson.loads(row["incident_json"]) if row else None

    # --- reading tasks ------------------------------------------------------------------------

    def get_task(self, task_id: str) -> Task | None:
        """One task, or None."""
        with self.reading() as db:
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _task(row) if row else None

    def list_tasks(
        self,
        *,
        status: str | None = None,
        department: str | None = None,
        incident_id: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks matching every given filter, oldest first."""
        where, args = [], []
        for column, value in (("status", status), ("department", department), ("incident_id", incident_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at, task_id LIMIT ? OFFSET ?"
        with self.reading() as db:
            rows = db.execute(sql, (*args, limit, offset)).fetchall()
        return [_task(r) for r in rows]

    def undelivered(self) -> list[Task]:
        """Tasks still to hand over: never delivered (pending) or given up on for now (failed)."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT * FROM tasks WHERE status IN ('pending', 'failed') ORDER BY created_at, task_id"
            ).fetchall()
        return [_task(r) for r in rows]

    def deliveries(self, task_id: str) -> list[Delivery]:
        """Every delivery attempt of a task, in order."""
        with self.reading() as db:
            rows = db.execute("SELECT * FROM deliveries WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()
        # sqlite3.Row iterates its values, not its keys
        return [Delivery(**{k: r[k] for k in r.keys() if k != "id"}) for r in rows]  # noqa: SIM118

    def audit(self, task_id: str) -> list[AuditEntry]:
        """Every state change of a task, in order."""
        with self.reading() as db:
            rows = db.execute("SELECT * FROM audit WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()
        return [AuditEntry(**{k: r[k] for k in r.keys() if k != "id"}) for r in rows]  # noqa: SIM118

    def stats(self, now: int | None = None) -> dict[str, Any]:
        """Task counts per department and status, per status, and how many are overdue."""
        now = now_ms() if now is None else now
        with self.reading() as db:
            rows = db.execute(
                "SELECT department, status, COUNT(*) AS n FROM tasks GROUP BY department, status"
            ).fetchall()
            overdue = db.execute(
                "SELECT COUNT(*) FROM tasks WHERE status != 'acknowledged' AND ack_deadline < ?", (now,)
            ).fetchone()[0]
            incidents = db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
        by_department: dict[str, dict[str, int]] = {}
        by_status = dict.fromkeys(STATUSES, 0)
        for r in rows:
            by_department.setdefault(r["department"], dict.fromkeys(STATUSES, 0))[r["status"]] = r["n"]
            by_status[r["status"]] += r["n"]
        return {
            "incidents": incidents,
            "tasks": sum(by_status.values()),
            "by_status": by_status,
            "by_department": dict(sorted(by_department.items())),
            "overdue": overdue,
        }

    # --- state changes ------------------------------------------------------------------------

    def record_attempt(
        self, task_id: str, url: str, *, http_status: int | None, error: str | None, ok: bool, now: int | None = None
    ) -> int:
        """Log one delivery attempt; returns its number (1 for the task's first ever)."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            attempt = db.execute("SELECT COUNT(*) FROM deliveries WHERE task_id = ?", (task_id,)).fetchone()[0] + 1
            db.execute(
                "INSERT INTO deliveries (task_id, attempt, at, url, http_status, error, ok)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task_id, attempt, now, url, http_status, error, int(ok)),
            )
        return attempt

    def begin_attempt(self, task_id: str, url: str, now: int | None = None) -> tuple[int, int]:
        """Log a delivery attempt before it is made, so one cut short by a crash is still on record;
        returns (row id, attempt number). `finish_attempt` fills in its outcome."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            attempt = db.execute("SELECT COUNT(*) FROM deliveries WHERE task_id = ?", (task_id,)).fetchone()[0] + 1
            cur = db.execute(
                "INSERT INTO deliveries (task_id, attempt, at, url, http_status, error, ok)"
                " VALUES (?, ?, ?, ?, NULL, ?, 0)",
                (task_id, attempt, now, url, IN_FLIGHT),
            )
            row = cur.lastrowid
        assert row is not None
        return row, attempt

    def finish_attempt(self, row: int, *, http_status: int | None, error: str | None, ok: bool) -> None:
        """The outcome of an attempt `begin_attempt` logged."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET http_status = ?, error = ?, ok = ? WHERE id = ?",
                (http_status, error, int(ok), row),
            )

    def mark_delivered(self, task_id: str, detail: str | None = None, now: int | None = None) -> bool:
        """pending/failed → delivered; False if the task was in another state (e.g. acknowledged)."""
        return self._move(task_id, ("pending", "failed"), "delivered", "delivered", "delivery", detail, now)

    def mark_failed(self, task_id: str, detail: str | None = None, now: int | None = None) -> bool:
        """pending → failed after the last attempt; a failed task is retried by the periodic sweep."""
        return self._move(task_id, ("pending",), "failed", "failed", "delivery", detail, now)

    def acknowledge(self, task_id: str, by: str, note: str | None = None, now: int | None = None) -> Task:
        """Mark a task acknowledged; KeyError if unknown, AlreadyAcknowledged if done before."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                raise KeyError(task_id)
            if row["status"] == "acknowledged":
                raise AlreadyAcknowledged(_task(row))
            db.execute(
                "UPDATE tasks SET status = 'acknowledged', acknowledged_by = ?, acknowledged_at = ?, ack_note = ?,"
                " updated_at = ? WHERE task_id = ?",
                (by, now, note, now, task_id),
            )
            late = now > row["ack_deadline"]
            detail = "after the deadline" + (f"; {note}" if note else "") if late else note
            _audit(db, task_id, now, "acknowledged", row["status"], "acknowledged", by, detail)
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _task(row)

    def _move(
        self,
        task_id: str,
        sources: tuple[str, ...],
        target: str,
        event: str,
        actor: str,
        detail: str | None,
        now: int | None,
    ) -> bool:
        now = now_ms() if now is None else now
        with self.transaction() as db:
            row = db.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None or row["status"] not in sources:
                return False
            db.execute("UPDATE tasks SET status = ?, updated_at = ? WHERE task_id = ?", (target, now, task_id))
            _audit(db, task_id, now, event, row["status"], target, actor, detail)
        return True


def _save_incident(db: sqlite3.Connection, incident: IncidentEvent, now: int) -> None:
    # An older event arriving late (a replay, a rebalance) must not replace a newer one.
    db.execute(
        "INSERT INTO incidents (incident_id, severity, status, updated_at, received_at, incident_json)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (incident_id) DO UPDATE SET severity = excluded.severity, status = excluded.status,"
        " updated_at = excluded.updated_at, received_at = excluded.received_at, incident_json = excluded.incident_json"
        " WHERE excluded.updated_at >= incidents.updated_at",
        (
            incident.incident_id,
            incident.severity,
            incident.status,
            incident.updated_at,
            now,
            incident.to_json().decode(),
        ),
    )


def _create_task(
    db: sqlite3.Connection, incident: IncidentEvent, department: str, ack_minutes: float, now: int
) -> tuple[Task, bool]:
    task_id = task_id_for(incident.incident_id, department)
    cursor = db.execute(
        "INSERT INTO tasks (task_id, incident_id, department, severity, status, created_at, updated_at,"
        " ack_deadline, incident_json) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (
            task_id,
            incident.incident_id,
            department,
            incident.severity,
            now,
            now,
            now + round(ack_minutes * 60_000),
            incident.to_json().decode(),
        ),
    )
    created = cursor.rowcount == 1
    if created:
        _audit(db, task_id, now, "created", None, "pending", "router", f"severity {incident.severity}")
    row = db.execute(
        "SELECT * FROM tasks WHERE incident_id = ? AND department = ?", (incident.incident_id, department)
    ).fetchone()
    return _task(row), created


def _audit(
    db: sqlite3.Connection,
    task_id: str,
    at: int,
    event: str,
    from_status: str | None,
    to_status: str,
    actor: str,
    detail: str | None,
) -> None:
    db.execute(
        "INSERT INTO audit (task_id, at, event, from_status, to_status, actor, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (task_id, at, event, from_status, to_status, actor, detail),
    )


def _task(row: sqlite3.Row) -> Task:
    fields = {k: row[k] for k in row.keys() if k != "incident_json"}  # noqa: SIM118 (sqlite3.Row iterates values)
    return Task(**fields, incident=orjson.loads(row["incident_json"]))
