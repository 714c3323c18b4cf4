"""The dispatch-task store: tables of tasks, the notification outbox, delivery attempts, the
audit trail, incidents and API tokens, in a SQLite file (WAL) or a PostgreSQL database.

A task is one department's job on one incident. `UNIQUE(incident_id, department)` makes
creating a task idempotent, which is what keeps a replayed incident from sending a second task.
Every message a department is due is an outbox row written in the same transaction as the
change that calls for it, so nothing decided is lost by a crash. Times are epoch milliseconds
(wall clock of the alert service, or the clock the caller passes). Methods are blocking: the
service calls them from worker threads, never on its event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel

from alerts.dialect import Database, display
from alerts.schema import migrate
from alerts.silences import InhibitRule, Matcher, Silence
from rules.models import SEVERITY_RANK, IncidentEvent, stable_id

TaskStatus = Literal["new", "delivered", "escalated", "acknowledged", "in_progress", "resolved", "closed"]
STATUSES: tuple[str, ...] = ("new", "delivered", "escalated", "acknowledged", "in_progress", "resolved", "closed")
UNACKNOWLEDGED = ("new", "delivered", "escalated")  # the states whose deadline still runs
DeliveryStatus = Literal["pending", "delivered", "failed"]
NotificationKind = Literal["task", "escalation", "handover", "revision"]
SYSTEM = "alert service"  # the actor of transitions no person made
ChannelsOf = Callable[[str], list[str]]
Row = Any  # Row, or dialect.PgRow that reads the same


def webhook_only(department: str) -> list[str]:
    """The default channels of a department: its webhook."""
    return ["webhook"]


class Routed(NamedTuple):
    """One incident event and what routing decided for it: its departments, their acknowledge
    minutes and send_resolved (one value for all, or one per department)."""

    incident: IncidentEvent
    departments: list[str]
    ack_minutes: float | dict[str, float]
    send_resolved: bool | dict[str, bool] = True
    close_tasks: bool = False  # a maintenance notice that closed: its tasks close with it


class Outcome(NamedTuple):
    """How one logged attempt ended: its attempt row, notification, number, HTTP status and error (None: sent)."""

    attempt_row: int
    notification_id: int
    attempt: int
    http_status: int | None
    error: str | None


class Task(BaseModel):
    """One department's job on one incident."""

    task_id: str
    incident_id: str
    department: str
    enterprise_id: str
    severity: str  # the incident's severity when the task was created
    status: TaskStatus
    delivery_status: DeliveryStatus
    created_at: int
    updated_at: int
    ack_deadline: int
    escalation_level: int = 0
    next_escalation_at: int | None = None
    acknowledged_by: str | None = None
    acknowledged_at: int | None = None
    ack_note: str | None = None
    assignee: str | None = None
    incident_rev: int = 0  # updated_at of the newest incident event this task has taken in
    send_resolved: bool = True  # whether its department is told of the all-clear
    incident: dict[str, Any]  # snapshot of the incident event that created the task


class Notification(BaseModel):
    """One message due to a department (an outbox row): its task, channel and sequence number."""

    id: int
    task_id: str
    department: str
    channel: str
    seq: int
    kind: NotificationKind
    created_at: int
    status: Literal["pending", "sent", "failed", "skipped"]
    sent_at: int | None
    reason: str | None
    held_by: str | None = None  # a silence id, or "incident:<id>" of the incident inhibiting it
    incident: dict[str, Any]

    @property
    def key(self) -> str:
        """The idempotency key receivers see: one per (task, channel, sequence number)."""
        return f"{self.task_id}:{self.channel}:{self.seq}"


# What an attempt row says until its outcome is known; left so by a crash during the attempt.
IN_FLIGHT = "no outcome recorded: the service stopped during this attempt, or it is still in flight"


class Delivery(BaseModel):
    """One attempt to hand a notification to its department."""

    task_id: str
    notification_id: int | None
    attempt: int
    at: int
    url: str
    http_status: int | None
    error: str | None
    ok: bool


class AuditEntry(BaseModel):
    """One state change of a task (or a note), with who caused it and from where."""

    task_id: str
    at: int
    event: str
    from_status: str | None
    to_status: str
    actor: str
    source: str | None
    detail: str | None


class TransitionRefused(Exception):
    """The task is not in a state that allows this step; `task` is the task as it is."""

    def __init__(self, task: Task, message: str) -> None:
        super().__init__(message)
        self.task = task


class AlreadyAcknowledged(TransitionRefused):
    """The task was acknowledged before; `task` holds who did it and when."""

    def __init__(self, task: Task) -> None:
        super().__init__(
            task, f"task {task.task_id} was acknowledged by {task.acknowledged_by} at {task.acknowledged_at}"
        )


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def task_id_for(incident_id: str, department: str) -> str:
    """The task id: the same incident and department always give the same id."""
    return stable_id("task", incident_id, department)


class TaskStore:
    """Tasks, outbox, deliveries, audit, incidents and tokens in one database."""

    def __init__(self, target: Path | str) -> None:
        """Open (and migrate) the store: a SQLite file path, or a `postgresql://` URL."""
        # One connection shared by the consumer, the delivery tasks and the API's worker
        # threads; its lock serialises them (writes are serial on either database anyway).
        self._db = Database(target)
        self.dialect = self._db.dialect
        self.path = Path(target) if self.dialect == "sqlite" else None  # the SQLite file
        self.location = display(target)  # for logs: a URL without its password
        with self._db.lock:
            self.migrated_from = migrate(self._db)
        # Which channels a department is told on, and the inhibition rules; the service sets
        # both from the routing in force.
        self.channels_of: ChannelsOf = webhook_only
        self.inhibit_rules: list[InhibitRule] = []

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One write transaction (also used by the demo inbox's and the tokens' tables)."""
        with self._db.transaction() as db:
            yield db

    @contextmanager
    def reading(self) -> Iterator[Database]:
        """The connection, for reads."""
        with self._db.lock:
            yield self._db

    # --- incidents and task creation ----------------------------------------------------------

    def record_incident(
        self,
        incident: IncidentEvent,
        departments: list[str],
        ack_minutes: float | dict[str, float],
        now: int | None = None,
        send_resolved: bool | dict[str, bool] = True,
    ) -> list[Task]:
        """Keep the incident's latest event, create the missing tasks (each with its first
        notification queued) and append this event to the incident's existing tasks as a
        revision (notified; the all-clear only where the route's send_resolved says so).
        Returns only the new tasks. `ack_minutes` and `send_resolved` are one value for all,
        or one per department (the route that chose it may set its own)."""
        return self.record_incidents([Routed(incident, departments, ack_minutes, send_resolved)], now)

    def record_incidents(self, batch: list[Routed], now: int | None = None) -> list[Task]:
        """`record_incident` for each routed incident, in order, in one transaction: the consumer
        stores what one fetch brought with one commit (one fsync) before committing its offsets."""
        now = now_ms() if now is None else now
        created: list[Task] = []
        with self.transaction() as db:
            for item in batch:
                created += self._record(db, item, now)
        return created

    def _record(self, db: Database, item: Routed, now: int) -> list[Task]:
        incident, ack_minutes, send_resolved = item.incident, item.ack_minutes, item.send_resolved
        raw = incident.to_json().decode()
        before = db.execute(
            "SELECT incident_json FROM incidents WHERE incident_id = ?", (incident.incident_id,)
        ).fetchone()
        _save_incident(db, incident, now, raw)
        created = []
        for d in item.departments:
            minutes = ack_minutes[d] if isinstance(ack_minutes, dict) else ack_minutes
            resolved = send_resolved.get(d, True) if isinstance(send_resolved, dict) else send_resolved
            task, is_new = _create_task(
                db,
                incident.incident_id,
                d,
                minutes,
                now,
                raw,
                send_resolved=resolved,
                channels_of=self.channels_of,
                inhibit_rules=self.inhibit_rules,
            )
            if is_new:
                created.append(task)
        previous = orjson.loads(before["incident_json"]) if before else None
        _append_revision(
            db,
            incident,
            raw,
            previous,
            {t.task_id for t in created},
            ack_minutes,
            now,
            self.channels_of,
            self.inhibit_rules,
        )
        if item.close_tasks:
            _close_all(db, incident.incident_id, now)
        return created

    def create_task(
        self, incident: IncidentEvent, department: str, ack_minutes: float, now: int | None = None
    ) -> tuple[Task, bool]:
        """Create one task, or return the existing one for this incident and department (False)."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            return _create_task(
                db,
                incident.incident_id,
                department,
                ack_minutes,
                now,
                incident.to_json().decode(),
                channels_of=self.channels_of,
                inhibit_rules=self.inhibit_rules,
            )

    def latest_incident(self, incident_id: str) -> dict[str, Any] | None:
        """The newest event seen of an incident (by its updated_at), as a dict."""
        with self.reading() as db:
            row = db.execute("SELECT incident_json FROM incidents WHERE incident_id = ?", (incident_id,)).fetchone()
        return orjson.loads(row["incident_json"]) if row else None

    def list_incidents(
        self, *, enterprise_id: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The newest event of each incident, newest first, filtered."""
        where, args = _filters(("enterprise_id", enterprise_id), ("status", status))
        with self.reading() as db:
            rows = db.execute(
                f"SELECT incident_json FROM incidents{where} ORDER BY updated_at DESC, incident_id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [orjson.loads(r["incident_json"]) for r in rows]

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
        enterprise_id: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks matching every given filter, oldest first."""
        where, args = _filters(
            ("status", status),
            ("department", department),
            ("incident_id", incident_id),
            ("enterprise_id", enterprise_id),
        )
        sql = f"SELECT * FROM tasks{where} ORDER BY created_at, task_id LIMIT ? OFFSET ?"
        with self.reading() as db:
            rows = db.execute(sql, (*args, limit, offset)).fetchall()
        return [_task(r) for r in rows]

    def deliveries(self, task_id: str) -> list[Delivery]:
        """Every delivery attempt of a task's notifications, in order."""
        with self.reading() as db:
            rows = db.execute("SELECT * FROM deliveries WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()
        # Row iterates its values, not its keys
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
                f"SELECT COUNT(*) FROM tasks WHERE status IN {UNACKNOWLEDGED} AND ack_deadline < ?", (now,)
            ).fetchone()[0]
            incidents = db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
            outbox = db.execute(
                "SELECT COUNT(*) FROM notifications WHERE status IN ('pending', 'failed') AND held_by IS NULL"
            ).fetchone()[0]
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
            "outbox_unsent": outbox,
        }

    # --- the outbox and delivery attempts -------------------------------------------------------

    def notifications(self, task_id: str) -> list[Notification]:
        """Every notification of a task, in order."""
        with self.reading() as db:
            rows = db.execute("SELECT * FROM notifications WHERE task_id = ? ORDER BY seq", (task_id,)).fetchall()
        return _notifications(rows)

    def unsent(self, *, include_failed: bool = True, limit: int = 10_000, after: int = 0) -> list[Notification]:
        """Notifications still to send: queued (pending) and, unless told otherwise, given up on
        for now (failed), oldest first; only those queued after outbox row `after` if given."""
        states = "('pending', 'failed')" if include_failed else "('pending')"
        with self.reading() as db:
            rows = db.execute(
                f"SELECT * FROM notifications WHERE status IN {states} AND held_by IS NULL AND id > ?"
                " ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return _notifications(rows)

    def get_notification(self, notification_id: int) -> Notification | None:
        """One outbox row, or None."""
        with self.reading() as db:
            row = db.execute("SELECT * FROM notifications WHERE id = ?", (notification_id,)).fetchone()
        return _notification(row) if row else None

    def begin_attempt(self, notification: Notification, url: str, now: int | None = None) -> tuple[int, int]:
        """Log a delivery attempt before it is made, so one cut short by a crash is still on record;
        returns (row id, attempt number of this notification). `finish_attempt` fills in its outcome."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            attempt = (
                db.execute("SELECT COUNT(*) FROM deliveries WHERE notification_id = ?", (notification.id,)).fetchone()[
                    0
                ]
                + 1
            )
            row = db.execute(
                "INSERT INTO deliveries (task_id, notification_id, attempt, at, url, http_status, error, ok)"
                " VALUES (?, ?, ?, ?, ?, NULL, ?, 0) RETURNING id",
                (notification.task_id, notification.id, attempt, now, url, IN_FLIGHT),
            ).fetchone()[0]
        return row, attempt

    def finish_attempt(self, row: int, *, http_status: int | None, error: str | None, ok: bool) -> None:
        """The outcome of an attempt `begin_attempt` logged."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET http_status = ?, error = ?, ok = ? WHERE id = ?",
                (http_status, error, int(ok), row),
            )

    def mark_sent(self, notification_id: int, detail: str | None = None, now: int | None = None) -> bool:
        """A notification reached its department; the task's first one moves it new → delivered.
        False if it was marked sent before."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            return _mark_sent(db, notification_id, detail, now)

    def begin_attempts(
        self, wanted: list[tuple[Notification, str]], now: int | None = None
    ) -> list[tuple[Notification, Task, int, int]]:
        """`begin_attempt` for many (notification, URL) pairs in one transaction, after the checks
        a single send makes (still unsent; a reminder of a task acted on meanwhile is skipped);
        returns (notification, task, attempt row, attempt number) for those to send now."""
        now = now_ms() if now is None else now
        out = []
        with self.transaction() as db:
            for chunk in _chunks(wanted):
                # Each outbox row's state, its attempts so far and its task: one read for the chunk.
                marks = ", ".join("?" * len(chunk))
                found = db.execute(
                    "SELECT n.id AS outbox_id, n.status AS outbox_status, n.held_by AS outbox_held_by,"
                    " (SELECT COUNT(*) FROM deliveries d WHERE d.notification_id = n.id) AS outbox_attempts, t.*"
                    f" FROM notifications n JOIN tasks t ON t.task_id = n.task_id WHERE n.id IN ({marks})",
                    [n.id for n, _ in chunk],
                ).fetchall()
                names = found[0].keys() if found else []
                rows = {row["outbox_id"]: row for row in found}
                starting = []
                for n, url in chunk:
                    row = rows.get(n.id)
                    if row is None or row["outbox_status"] in ("sent", "skipped") or row["outbox_held_by"] is not None:
                        continue
                    task = _task(row, n.incident, names)  # the body shows the message's incident, not the task's
                    if n.kind in ("task", "escalation") and task.status not in UNACKNOWLEDGED:
                        db.execute(
                            "UPDATE notifications SET status = 'skipped', sent_at = ?,"
                            " reason = COALESCE(reason || '; ', '') || ? WHERE id = ?",
                            (now, f"not sent: task {task.status} before it was sent", n.id),
                        )
                        continue
                    starting.append((n, task, url, row["outbox_attempts"] + 1))
                if not starting:
                    continue
                # One multi-row INSERT; RETURNING's order is unspecified, so rows come back by notification.
                inserted = db.execute(
                    "INSERT INTO deliveries (task_id, notification_id, attempt, at, url, http_status, error, ok)"
                    " VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, NULL, ?, 0)"] * len(starting))
                    + " RETURNING id, notification_id",
                    [v for n, _, url, attempt in starting for v in (n.task_id, n.id, attempt, now, url, IN_FLIGHT)],
                ).fetchall()
                attempt_rows = {r["notification_id"]: r["id"] for r in inserted}
                out += [(n, task, attempt_rows[n.id], attempt) for n, task, _, attempt in starting]
        return out

    def finish_attempts(self, outcomes: list[Outcome], now: int | None = None) -> None:
        """The outcomes of attempts `begin_attempts` logged, in one transaction; each 2xx also marks
        its notification sent (as `mark_sent`); a failure leaves it for the retry policy."""
        now = now_ms() if now is None else now
        ok = [o for o in outcomes if o.error is None]
        with self.transaction() as db:
            # Successes by status code, one statement per chunk (nearly all of a batch answer alike).
            for status in {o.http_status for o in ok}:
                for chunk in _chunks([o.attempt_row for o in ok if o.http_status == status]):
                    marks = ", ".join("?" * len(chunk))
                    db.execute(
                        f"UPDATE deliveries SET http_status = ?, error = NULL, ok = 1 WHERE id IN ({marks})",
                        [status, *chunk],
                    )
            db.executemany(
                "UPDATE deliveries SET http_status = ?, error = ?, ok = 0 WHERE id = ?",
                [(o.http_status, o.error, o.attempt_row) for o in outcomes if o.error is not None],
            )
            for chunk in _chunks(ok):
                _mark_many_sent(
                    db, {o.notification_id: f"HTTP {o.http_status} on attempt {o.attempt}" for o in chunk}, now
                )

    def mark_skipped(self, notification_id: int, why: str, now: int | None = None) -> bool:
        """A queued reminder no longer worth sending (its task was acknowledged meanwhile); kept on record."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE notifications SET status = 'skipped', sent_at = ?, reason = COALESCE(reason || '; ', '') || ?"
                " WHERE id = ? AND status IN ('pending', 'failed')",
                (now, f"not sent: {why}", notification_id),
            )
        return cur.rowcount == 1

    def mark_failed(self, notification_id: int, detail: str | None = None, now: int | None = None) -> bool:
        """A notification's last attempt failed; the sweep tries it again later. False if already sent."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            n = db.execute("SELECT task_id, status FROM notifications WHERE id = ?", (notification_id,)).fetchone()
            if n is None or n["status"] in ("sent", "skipped"):
                return False
            db.execute("UPDATE notifications SET status = 'failed' WHERE id = ?", (notification_id,))
            task = db.execute("SELECT * FROM tasks WHERE task_id = ?", (n["task_id"],)).fetchone()
            if task["delivery_status"] == "pending":
                db.execute(
                    "UPDATE tasks SET delivery_status = 'failed', updated_at = ? WHERE task_id = ?", (now, n["task_id"])
                )
                _audit(
                    db, n["task_id"], now, "delivery_failed", task["status"], task["status"], "delivery", None, detail
                )
        return True

    # --- the workflow: acknowledge, assign, hand over, note, resolve, close ---------------------

    def acknowledge(
        self, task_id: str, by: str, note: str | None = None, source: str | None = None, now: int | None = None
    ) -> Task:
        """Acknowledge a task (stops its escalation); KeyError if unknown, AlreadyAcknowledged if done before."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            row = _row(db, task_id)
            if row["status"] not in UNACKNOWLEDGED:
                raise AlreadyAcknowledged(_task(row))
            db.execute(
                "UPDATE tasks SET status = 'acknowledged', acknowledged_by = ?, acknowledged_at = ?, ack_note = ?,"
                " next_escalation_at = NULL, updated_at = ? WHERE task_id = ?",
                (by, now, note, now, task_id),
            )
            late = now > row["ack_deadline"]
            detail = "after the deadline" + (f"; {note}" if note else "") if late else note
            _audit(db, task_id, now, "acknowledged", row["status"], "acknowledged", by, source, detail)
            return _task(_row(db, task_id))

    def assign(self, task_id: str, person: str, by: str, source: str | None = None, now: int | None = None) -> Task:
        """Give an acknowledged task to a person: acknowledged/in_progress → in_progress."""
        return self._step(
            task_id,
            ("acknowledged", "in_progress"),
            "in_progress",
            "assigned",
            by,
            source,
            f"assigned to {person}",
            now,
            {"assignee": person},
        )

    def hand_over(
        self,
        task_id: str,
        department: str,
        ack_minutes: float,
        by: str,
        source: str | None = None,
        note: str | None = None,
        now: int | None = None,
    ) -> tuple[Task, Task]:
        """Hand an acknowledged task to another department: that department gets (or is re-notified
        of) its own task for the incident; returns (this task, the department's task)."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            row = _row(db, task_id)
            if row["status"] not in ("acknowledged", "in_progress"):
                raise TransitionRefused(
                    _task(row), f"task {task_id} is {row['status']}; handover needs one of acknowledged, in_progress"
                )
            if department == row["department"]:
                raise TransitionRefused(_task(row), f"task {task_id} already belongs to {department}")
            reason = f"handed over from {row['department']} by {by}" + (f": {note}" if note else "")
            target, created = _create_task(
                db,
                row["incident_id"],
                department,
                ack_minutes,
                now,
                _incident_json(db, row),
                "handover",
                reason,
                channels_of=self.channels_of,
                inhibit_rules=self.inhibit_rules,
            )
            if not created:
                _enqueue(
                    db,
                    target.task_id,
                    department,
                    "handover",
                    now,
                    _incident_json(db, row),
                    reason,
                    self.channels_of,
                    self.inhibit_rules,
                )
            detail = f"handed over to {department}" + (f": {note}" if note else "")
            db.execute(
                "UPDATE tasks SET assignee = ?, updated_at = ? WHERE task_id = ?",
                (f"department {department}", now, task_id),
            )
            _audit(db, task_id, now, "handed_over", row["status"], row["status"], by, source, detail)
            return _task(_row(db, task_id)), _task(_row(db, target.task_id))

    def add_note(self, task_id: str, text: str, by: str, source: str | None = None, now: int | None = None) -> Task:
        """A note on the task's trail; its state does not change (refused once closed)."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            row = _row(db, task_id)
            if row["status"] == "closed":
                raise TransitionRefused(_task(row), f"task {task_id} is closed")
            db.execute("UPDATE tasks SET updated_at = ? WHERE task_id = ?", (now, task_id))
            _audit(db, task_id, now, "note", row["status"], row["status"], by, source, text)
            return _task(_row(db, task_id))

    def resolve(
        self, task_id: str, by: str, note: str | None = None, source: str | None = None, now: int | None = None
    ) -> Task:
        """The department has dealt with it: acknowledged/in_progress → resolved."""
        return self._step(task_id, ("acknowledged", "in_progress"), "resolved", "resolved", by, source, note, now)

    def close_task(
        self, task_id: str, by: str, note: str | None = None, source: str | None = None, now: int | None = None
    ) -> Task:
        """The case is closed: resolved → closed."""
        return self._step(task_id, ("resolved",), "closed", "closed", by, source, note, now)

    def _step(
        self,
        task_id: str,
        sources: tuple[str, ...],
        target: str,
        event: str,
        by: str,
        source: str | None,
        detail: str | None,
        now: int | None,
        extra: dict[str, Any] | None = None,
    ) -> Task:
        now = now_ms() if now is None else now
        with self.transaction() as db:
            row = _row(db, task_id)
            if row["status"] not in sources:
                raise TransitionRefused(
                    _task(row), f"task {task_id} is {row['status']}; {event} needs one of {', '.join(sources)}"
                )
            sets = {"status": target, "updated_at": now, **(extra or {})}
            db.execute(
                "UPDATE tasks SET " + ", ".join(f"{k} = ?" for k in sets) + " WHERE task_id = ?",
                (*sets.values(), task_id),
            )
            _audit(db, task_id, now, event, row["status"], target, by, source, detail)
            return _task(_row(db, task_id))

    # --- silences and held messages --------------------------------------------------------------

    def add_silence(
        self, matcher: Matcher, *, starts_at: int, ends_at: int, created_by: str, reason: str, now: int | None = None
    ) -> Silence:
        """Hold back messages matching `matcher` from `starts_at` to `ends_at` (epoch ms)."""
        now = now_ms() if now is None else now
        if ends_at <= max(starts_at, now):
            raise ValueError("a silence must end after it starts and after now")
        silence = Silence(
            silence_id=stable_id("sil", matcher.model_dump_json(), starts_at, ends_at, created_by, now),
            matcher=matcher,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            reason=reason,
            created_at=now,
        )
        with self.transaction() as db:
            db.execute(
                "INSERT INTO silences (silence_id, matcher_json, starts_at, ends_at, created_by, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    silence.silence_id,
                    matcher.model_dump_json(exclude_none=True),
                    starts_at,
                    ends_at,
                    created_by,
                    reason,
                    now,
                ),
            )
        return silence

    def silences(self, *, active_at: int | None = None) -> list[Silence]:
        """Every silence (or those in force at `active_at`), newest first."""
        with self.reading() as db:
            rows = db.execute("SELECT * FROM silences ORDER BY created_at DESC, silence_id").fetchall()
        found = [
            Silence(
                silence_id=r["silence_id"],
                matcher=Matcher.model_validate_json(r["matcher_json"]),
                starts_at=r["starts_at"],
                ends_at=r["ends_at"],
                created_by=r["created_by"],
                reason=r["reason"],
                created_at=r["created_at"],
                expired_at=r["expired_at"],
            )
            for r in rows
        ]
        return [x for x in found if active_at is None or x.active(active_at)]

    def expire_silence(self, silence_id: str, now: int | None = None) -> Silence:
        """End a silence now (what it held is released at the next tick); KeyError if unknown,
        ValueError if it has ended already."""
        now = now_ms() if now is None else now
        with self.transaction() as db:
            row = db.execute("SELECT * FROM silences WHERE silence_id = ?", (silence_id,)).fetchone()
            if row is None:
                raise KeyError(silence_id)
            if row["expired_at"] is not None or row["ends_at"] <= now:
                raise ValueError(f"silence {silence_id} has ended already")
            db.execute("UPDATE silences SET expired_at = ? WHERE silence_id = ?", (now, silence_id))
        return next(x for x in self.silences() if x.silence_id == silence_id)

    def held(self) -> list[Notification]:
        """Messages held back now, oldest first."""
        with self.reading() as db:
            rows = db.execute(
                "SELECT * FROM notifications WHERE held_by IS NOT NULL AND status = 'pending' ORDER BY id"
            ).fetchall()
        return _notifications(rows)

    def release_held(self, now: int) -> list[str]:
        """Release what a silence that ended, or an inhibiting incident that closed, held back:
        each task whose incident is still open gets one message with its current state (the held
        ones stay on record as superseded); returns the ids of the tasks told."""
        told: list[str] = []
        with self.transaction() as db:
            rows = db.execute(
                "SELECT * FROM notifications WHERE held_by IS NOT NULL AND status = 'pending' ORDER BY id"
            ).fetchall()
            ended = {h: why for h in {r["held_by"] for r in rows} if (why := _hold_ended(db, h, now))}
            by_task: dict[str, list[Row]] = {}
            for r in rows:
                if r["held_by"] in ended:
                    by_task.setdefault(r["task_id"], []).append(r)
            for task_id, held in by_task.items():
                why = ended[held[-1]["held_by"]]
                for r in held:
                    db.execute(
                        "UPDATE notifications SET status = 'skipped', sent_at = ?,"
                        " reason = COALESCE(reason || '; ', '') || ? WHERE id = ?",
                        (now, f"held ({r['held_by']}) until {why}; superseded by one message then", r["id"]),
                    )
                task = _row(db, task_id)
                incident_json = _incident_json(db, task)
                incident = orjson.loads(incident_json)
                if incident.get("status") == "closed":
                    _audit(
                        db,
                        task_id,
                        now,
                        "released",
                        task["status"],
                        task["status"],
                        SYSTEM,
                        None,
                        f"{why}; the incident closed meanwhile: nothing to send",
                    )
                    continue
                ever_sent = db.execute(
                    "SELECT 1 FROM notifications WHERE task_id = ? AND status = 'sent' LIMIT 1", (task_id,)
                ).fetchone()
                kind = "revision" if ever_sent else "task"
                _enqueue(
                    db,
                    task_id,
                    task["department"],
                    kind,
                    now,
                    incident_json,
                    f"{why}: still open, so told now",
                    self.channels_of,
                    self.inhibit_rules,
                )
                if task["status"] in UNACKNOWLEDGED and task["next_escalation_at"] is None and kind == "task":
                    # The clock starts now, with the time the task was given at its creation.
                    restart = now + (task["ack_deadline"] - task["created_at"])
                    db.execute("UPDATE tasks SET next_escalation_at = ? WHERE task_id = ?", (restart, task_id))
                _audit(db, task_id, now, "released", task["status"], task["status"], SYSTEM, None, why)
                told.append(task_id)
        return told

    # --- escalation ------------------------------------------------------------------------------

    def due_escalations(self, now: int) -> list[Task]:
        """Unacknowledged tasks whose escalation deadline has passed, earliest first."""
        with self.reading() as db:
            rows = db.execute(
                f"SELECT * FROM tasks WHERE next_escalation_at IS NOT NULL AND next_escalation_at <= ?"
                f" AND status IN {UNACKNOWLEDGED} ORDER BY next_escalation_at, task_id",
                (now,),
            ).fetchall()
        return [_task(r) for r in rows]

    def escalate(
        self, task_id: str, target: str | None, ack_minutes: float, *, now: int, expected_level: int
    ) -> tuple[Task, Task | None] | None:
        """Escalate an unacknowledged task one level: it becomes `escalated`, its department is
        reminded, `target` (the next level's department, if any) gets a task or a notification,
        and the next deadline is set (none when there is no higher level).

        Returns None when the task was acknowledged or escalated meanwhile (`expected_level`
        guards against a second timer, e.g. another process on the same file)."""
        with self.transaction() as db:
            row = _row(db, task_id)
            if (
                row["status"] not in UNACKNOWLEDGED
                or row["escalation_level"] != expected_level
                or row["next_escalation_at"] is None
                or row["next_escalation_at"] > now
            ):
                return None
            minutes = _minutes(now - row["created_at"])
            incident_json = _incident_json(db, row)
            level = row["escalation_level"] + 1
            next_at = now + round(ack_minutes * 60_000) if target is not None else None
            db.execute(
                "UPDATE tasks SET status = 'escalated', escalation_level = ?, next_escalation_at = ?, updated_at = ?"
                " WHERE task_id = ?",
                (level, next_at, now, task_id),
            )
            target_task = None
            if target is not None:
                reason = f"escalated from {row['department']}: not acknowledged after {minutes}"
                target_task, created = _create_task(
                    db,
                    row["incident_id"],
                    target,
                    ack_minutes,
                    now,
                    incident_json,
                    "escalation",
                    reason,
                    channels_of=self.channels_of,
                    inhibit_rules=self.inhibit_rules,
                )
                if not created:
                    _enqueue(
                        db,
                        target_task.task_id,
                        target,
                        "escalation",
                        now,
                        incident_json,
                        reason,
                        self.channels_of,
                        self.inhibit_rules,
                    )
                detail = f"level {level}: not acknowledged after {minutes}; escalated to {target}"
            else:
                detail = f"level {level}: not acknowledged after {minutes}; no higher level in the chain"
            _enqueue(
                db,
                task_id,
                row["department"],
                "escalation",
                now,
                incident_json,
                detail,
                self.channels_of,
                self.inhibit_rules,
            )
            _audit(db, task_id, now, "escalated", row["status"], "escalated", SYSTEM, None, detail)
            return _task(_row(db, task_id)), target_task


def _mark_sent(db: Database, notification_id: int, detail: str | None, now: int) -> bool:
    return notification_id in _mark_many_sent(db, {notification_id: detail}, now)


def _mark_many_sent(db: Database, details: dict[int, str | None], now: int) -> set[int]:
    """Mark notifications (at most `_chunks`' size) sent, in three statements; a task's first
    message sent moves it new → delivered. Returns those marked now (not marked sent before)."""
    marks = ", ".join("?" * len(details))
    sent = db.execute(
        f"UPDATE notifications SET status = 'sent', sent_at = ? WHERE id IN ({marks})"
        " AND status NOT IN ('sent', 'skipped') RETURNING id, task_id",
        [now, *details],
    ).fetchall()
    detail_of: dict[str, str | None] = {}
    for r in sorted(sent, key=lambda r: r["id"]):  # a task's first message sent names the move
        detail_of.setdefault(r["task_id"], details[r["id"]])
    if not detail_of:
        return set()
    marks = ", ".join("?" * len(detail_of))
    moved = db.execute(
        "UPDATE tasks SET delivery_status = 'delivered', updated_at = ?,"
        " status = CASE WHEN status = 'new' THEN 'delivered' ELSE status END"
        f" WHERE task_id IN ({marks}) AND delivery_status != 'delivered' RETURNING task_id, status",
        [now, *detail_of],
    ).fetchall()
    if moved:
        db.executemany(
            "INSERT INTO audit (task_id, at, event, from_status, to_status, actor, source, detail)"
            " VALUES (?, ?, 'delivered', ?, ?, 'delivery', NULL, ?)",
            [
                (
                    r["task_id"],
                    now,
                    "new" if r["status"] == "delivered" else r["status"],
                    r["status"],
                    detail_of[r["task_id"]],
                )
                for r in moved
            ],
        )
    return {r["id"] for r in sent}


def _chunks(items: list[Any], size: int = 500) -> Iterator[list[Any]]:
    """`items` in lists of at most `size`: IN lists and multi-row VALUES stay well under the
    databases' limits on parameters."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _filters(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    where, args = [], []
    for column, value in pairs:
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), args


def _minutes(ms: int) -> str:
    return f"{ms / 60_000:.1f} min"


def _row(db: Database, task_id: str) -> Row:
    row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    if row is None:
        raise KeyError(task_id)
    return row


def _incident_json(db: Database, task: Row) -> str:
    """The newest event of a task's incident (its own snapshot if none was kept)."""
    row = db.execute("SELECT incident_json FROM incidents WHERE incident_id = ?", (task["incident_id"],)).fetchone()
    return row["incident_json"] if row else task["incident_json"]


def _save_incident(db: Database, incident: IncidentEvent, now: int, raw: str) -> None:
    # An older event arriving late (a replay, a rebalance) must not replace a newer one.
    db.execute(
        "INSERT INTO incidents (incident_id, enterprise_id, severity, status, updated_at, received_at, incident_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (incident_id) DO UPDATE SET severity = excluded.severity, status = excluded.status,"
        " updated_at = excluded.updated_at, received_at = excluded.received_at, incident_json = excluded.incident_json"
        " WHERE excluded.updated_at >= incidents.updated_at",
        (
            incident.incident_id,
            incident.enterprise_id,
            incident.severity,
            incident.status,
            incident.updated_at,
            now,
            raw,
        ),
    )


def _append_revision(
    db: Database,
    incident: IncidentEvent,
    raw: str,
    previous: dict[str, Any] | None,
    skip: set[str],
    ack_minutes: float | dict[str, float],
    now: int,
    channels_of: ChannelsOf,
    inhibit_rules: list[InhibitRule],
) -> None:
    """Give every existing task of the incident this newer event: a `revision` notification
    and an audit row; a worse severity also brings an unacknowledged task's deadline forward."""
    change = describe_change(previous, incident)
    rows = db.execute(
        "SELECT * FROM tasks WHERE incident_id = ? AND incident_rev < ?", (incident.incident_id, incident.updated_at)
    ).fetchall()
    for row in rows:
        if row["task_id"] in skip:
            continue
        sets: dict[str, Any] = {"incident_rev": incident.updated_at, "updated_at": now}
        minutes = ack_minutes.get(row["department"]) if isinstance(ack_minutes, dict) else ack_minutes
        if minutes is not None and row["status"] in UNACKNOWLEDGED and row["next_escalation_at"] is not None:
            sooner = now + round(minutes * 60_000)
            if sooner < row["next_escalation_at"] and previous and _worse(incident.severity, previous):
                sets["next_escalation_at"] = sooner
        db.execute(
            "UPDATE tasks SET " + ", ".join(f"{k} = ?" for k in sets) + " WHERE task_id = ?",
            (*sets.values(), row["task_id"]),
        )
        if incident.status == "closed" and not row["send_resolved"]:
            detail = f"{change} (not notified: its route has send_resolved false)"
        else:
            _enqueue(db, row["task_id"], row["department"], "revision", now, raw, change, channels_of, inhibit_rules)
            detail = change
        _audit(db, row["task_id"], now, "revision", row["status"], row["status"], "router", None, detail)


def _close_all(db: Database, incident_id: str, now: int) -> None:
    """Close every open task of a maintenance notice that closed (its all-clear revision is queued already)."""
    rows = db.execute("SELECT task_id, status FROM tasks WHERE incident_id = ? AND status != 'closed'", (incident_id,))
    for row in rows.fetchall():
        db.execute(
            "UPDATE tasks SET status = 'closed', next_escalation_at = NULL, updated_at = ? WHERE task_id = ?",
            (now, row["task_id"]),
        )
        _audit(db, row["task_id"], now, "closed", row["status"], "closed", SYSTEM, None, "the notice closed: all clear")


def _worse(severity: str, previous: dict[str, Any]) -> bool:
    return SEVERITY_RANK[severity] > SEVERITY_RANK.get(previous.get("severity", "blue"), 1)


def describe_change(previous: dict[str, Any] | None, incident: IncidentEvent) -> str:
    """What an incident event changed, in a line a duty officer reads."""
    parts = []
    if incident.status == "closed":
        what = "maintenance notice" if incident.incident_id.startswith("NOTICE-") else "incident"
        parts.append(f"all clear: the {what} is closed")
    if previous is not None and previous.get("severity") != incident.severity:
        parts.append(f"severity {previous.get('severity')} → {incident.severity}")
    new_hazards = len(incident.hazard_ids) - len((previous or {}).get("hazard_ids", []))
    if new_hazards > 0:
        parts.append(f"{new_hazards} new hazard(s)")
    parts.append(f"{len(incident.open_hazard_ids)} of {len(incident.hazard_ids)} hazard(s) open")
    return "; ".join(parts)


def _create_task(
    db: Database,
    incident_id: str,
    department: str,
    ack_minutes: float,
    now: int,
    incident_json: str,
    kind: NotificationKind = "task",
    reason: str | None = None,
    send_resolved: bool = True,
    channels_of: ChannelsOf | None = None,
    inhibit_rules: list[InhibitRule] | None = None,
) -> tuple[Task, bool]:
    channels_of = channels_of or webhook_only
    task_id = task_id_for(incident_id, department)
    incident = _parsed(db, incident_json)
    deadline = now + round(ack_minutes * 60_000)
    # RETURNING gives the new row (none when the task existed), saving a read per task.
    inserted = db.execute(
        "INSERT INTO tasks (task_id, incident_id, department, enterprise_id, severity, status, delivery_status,"
        " created_at, updated_at, ack_deadline, next_escalation_at, incident_json, incident_rev, send_resolved)"
        " VALUES (?, ?, ?, ?, ?, 'new', 'pending', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING *",
        (
            task_id,
            incident_id,
            department,
            incident.get("enterprise_id", ""),
            incident["severity"],
            now,
            now,
            deadline,
            deadline,
            incident_json,
            incident.get("updated_at", 0),
            int(send_resolved),
        ),
    ).fetchone()
    if inserted is None:
        return _task(_row(db, task_id)), False
    detail = f"severity {incident['severity']}" + (f"; {reason}" if reason else "")
    _audit(db, task_id, now, "created", None, "new", "router", None, detail)
    held = _enqueue(db, task_id, department, kind, now, incident_json, reason, channels_of, inhibit_rules)
    return _task(_row(db, task_id) if held else inserted, incident), True


def _enqueue(
    db: Database,
    task_id: str,
    department: str,
    kind: str,
    now: int,
    incident_json: str,
    reason: str | None,
    channels_of: ChannelsOf,
    inhibit_rules: list[InhibitRule] | None = None,
) -> bool:
    """Queue the task's next message on each channel its department has (sequence numbers count
    per task and channel); returns whether a silence or an inhibiting incident holds it."""
    held = _hold(db, _parsed(db, incident_json), department, now, inhibit_rules or [])
    held_by = held[0] if held else None
    for channel in channels_of(department):
        # The next sequence number and the row in one statement: one round trip on PostgreSQL.
        db.execute(
            "INSERT INTO notifications (task_id, department, channel, seq, kind, created_at, status, reason,"
            " incident_json, held_by) SELECT ?, ?, ?, COALESCE(MAX(seq) + 1, 0), ?, ?, 'pending', ?, ?, ?"
            " FROM notifications WHERE task_id = ? AND channel = ?",
            (task_id, department, channel, kind, now, reason, incident_json, held_by, task_id, channel),
        )
    if held:
        status = db.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()["status"]
        _audit(db, task_id, now, "held", status, status, SYSTEM, None, f"{kind} message held: {held[1]}")
        if kind == "task":
            # Nobody was told, so no clock runs; it starts when the message is released.
            db.execute("UPDATE tasks SET next_escalation_at = NULL WHERE task_id = ?", (task_id,))
    return held is not None


def _parsed(db: Database, incident_json: str) -> dict[str, Any]:
    """The incident JSON decoded once per transaction: each of its departments' tasks and
    messages reads the same event (callers read it, never change it)."""
    parsed = db.memo.get(incident_json)
    if parsed is None:
        parsed = db.memo[incident_json] = orjson.loads(incident_json)
    return parsed


def _hold_ended(db: Database, held_by: str, now: int) -> str | None:
    """Why what `held_by` holds may go now (the silence ended, the inhibiting incident closed), or None."""
    if held_by.startswith("incident:"):
        row = db.execute("SELECT status FROM incidents WHERE incident_id = ?", (held_by[9:],)).fetchone()
        return f"inhibiting incident {held_by[9:]} closed" if row is None or row["status"] == "closed" else None
    row = db.execute("SELECT * FROM silences WHERE silence_id = ?", (held_by,)).fetchone()
    if row is None:
        return f"silence {held_by} is gone"
    if row["expired_at"] is not None and row["expired_at"] <= now:
        return f"silence {held_by} was ended early"
    return f"silence {held_by} ended" if row["ends_at"] <= now else None


def _hold(
    db: Database, incident: dict[str, Any], department: str, now: int, rules: list[InhibitRule]
) -> tuple[str, str] | None:
    """What holds a message back now, if anything: (held_by, why)."""
    # The silences in force are read once per transaction and time (a batch asks for every message).
    silences = db.memo.get(("silences", now))
    if silences is None:
        silences = db.memo[("silences", now)] = [
            (Matcher.model_validate_json(row["matcher_json"]), row)
            for row in db.execute(
                "SELECT * FROM silences WHERE starts_at <= ? AND ends_at > ?"
                " AND (expired_at IS NULL OR expired_at > ?) ORDER BY ends_at DESC",
                (now, now, now),
            )
        ]
    for matcher, row in silences:
        if matcher.matches(incident, department):
            return row["silence_id"], f"silenced by {row['silence_id']} ({row['created_by']}: {row['reason']})"
    for rule in rules:
        if not rule.target.matches(incident, department):
            continue
        # Only incidents with the same `equal` labels can inhibit this one: ask for those alone
        # (site_id is indexed); a label this incident lacks is compared below instead.
        labels = [k for k in rule.equal if incident.get(k) is not None]
        same = "".join(f" AND json_extract(incident_json, '$.{k}') = ?" for k in labels)
        for other in db.execute(
            "SELECT incident_id, incident_json FROM incidents WHERE status != 'closed' AND incident_id != ?" + same,
            (incident.get("incident_id"), *(str(incident[k]) for k in labels)),
        ):
            source = orjson.loads(other["incident_json"])
            # An empty label is no label: scope incidents have no site, and two of them are not "the same site".
            equal = all(incident.get(k) and source.get(k) == incident.get(k) for k in rule.equal)
            if rule.source.matches(source) and equal:
                why = f"inhibited by open {source.get('severity')} incident {other['incident_id']}"
                return f"incident:{other['incident_id']}", f"{why} (equal {', '.join(rule.equal)})"
    return None


def _audit(
    db: Database,
    task_id: str,
    at: int,
    event: str,
    from_status: str | None,
    to_status: str,
    actor: str,
    source: str | None,
    detail: str | None,
) -> None:
    db.execute(
        "INSERT INTO audit (task_id, at, event, from_status, to_status, actor, source, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, at, event, from_status, to_status, actor, source, detail),
    )


def _task(row: Row, incident: dict[str, Any] | None = None, names: list[str] | None = None) -> Task:
    """A task row as a model; `incident` given: used instead of decoding the row's incident JSON."""
    fields = _fields(row, names)
    raw = fields.pop("incident_json")
    return Task(**fields, incident=orjson.loads(raw) if incident is None else incident)


def _notification(row: Row, names: list[str] | None = None) -> Notification:
    fields = _fields(row, names)
    raw = fields.pop("incident_json")
    return Notification(**fields, incident=orjson.loads(raw))


def _notifications(rows: list[Row]) -> list[Notification]:
    names = rows[0].keys() if rows else []
    return [_notification(r, names) for r in rows]


def _fields(row: Row, names: list[str] | None = None) -> dict[str, Any]:
    # By position, with the column names read once per result where the caller can: sqlite3.Row
    # finds a column by name with a scan of its names, and builds its `keys()` list on each call.
    return dict(zip(row.keys() if names is None else names, row, strict=True))
