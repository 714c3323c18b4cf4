"""The task store's schema and its migrations: SQLite tracks its version in `PRAGMA user_version`,
PostgreSQL in a `schema_version` table.

Every SQLite file, new or old, goes through the same steps in order: version 1 is the first
schema this service shipped (so a fresh file and a file from an older release end up alike),
each later step moves the data on. A step runs in one transaction with the version bump.
PostgreSQL came with version 5, so a new PostgreSQL store starts from that version's schema
(`BASELINE`); every step after it is written once, in the store's SQL, and runs on both.
"""

from __future__ import annotations

from collections.abc import Callable

from alerts.dialect import Database

V1 = """
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

# Version 2: the task workflow (new → delivered → acknowledged → in_progress → resolved → closed,
# plus escalated) apart from the delivery outcome; escalation deadlines; the notification outbox;
# API tokens; who and from where in the audit trail; the enterprise of each task and incident.
V2_TASKS = """
CREATE TABLE tasks_v2 (
    task_id            TEXT PRIMARY KEY,
    incident_id        TEXT NOT NULL,
    department         TEXT NOT NULL,
    enterprise_id      TEXT NOT NULL,
    severity           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN
                           ('new', 'delivered', 'escalated', 'acknowledged', 'in_progress', 'resolved', 'closed')),
    delivery_status    TEXT NOT NULL CHECK (delivery_status IN ('pending', 'delivered', 'failed')),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    ack_deadline       INTEGER NOT NULL,
    escalation_level   INTEGER NOT NULL DEFAULT 0,
    next_escalation_at INTEGER,
    acknowledged_by    TEXT,
    acknowledged_at    INTEGER,
    ack_note           TEXT,
    assignee           TEXT,
    incident_json      TEXT NOT NULL,
    UNIQUE (incident_id, department)
);
INSERT INTO tasks_v2 (task_id, incident_id, department, enterprise_id, severity, status, delivery_status,
                      created_at, updated_at, ack_deadline, next_escalation_at, acknowledged_by, acknowledged_at,
                      ack_note, incident_json)
SELECT task_id, incident_id, department, COALESCE(json_extract(incident_json, '$.enterprise_id'), ''), severity,
       CASE status WHEN 'pending' THEN 'new' WHEN 'failed' THEN 'new' ELSE status END,
       CASE WHEN status = 'acknowledged' THEN
                CASE WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.task_id = tasks.task_id AND d.ok = 1)
                     THEN 'delivered' ELSE 'pending' END
            WHEN status = 'delivered' THEN 'delivered' WHEN status = 'failed' THEN 'failed' ELSE 'pending' END,
       created_at, updated_at, ack_deadline,
       CASE WHEN status = 'acknowledged' THEN NULL ELSE ack_deadline END,
       acknowledged_by, acknowledged_at, ack_note, incident_json
FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_v2 RENAME TO tasks;
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_department ON tasks (department, status);
CREATE INDEX tasks_enterprise ON tasks (enterprise_id);
CREATE INDEX tasks_escalation ON tasks (next_escalation_at) WHERE next_escalation_at IS NOT NULL;

ALTER TABLE audit ADD COLUMN source TEXT;
ALTER TABLE deliveries ADD COLUMN notification_id INTEGER;
ALTER TABLE incidents ADD COLUMN enterprise_id TEXT NOT NULL DEFAULT '';
UPDATE incidents SET enterprise_id = COALESCE(json_extract(incident_json, '$.enterprise_id'), '');
CREATE INDEX incidents_enterprise ON incidents (enterprise_id);

-- The outbox: every message a department is due, written in the transaction that decided it.
-- (task, channel, seq) is unique, so nothing is queued twice; a row leaves `pending` only
-- when the receiver answered 2xx (`sent`), was given up on for now (`failed`, retried by the
-- sweep) or was no longer worth sending (`skipped`: a reminder for a task acknowledged meanwhile).
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL REFERENCES tasks (task_id),
    department  TEXT NOT NULL,
    channel     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    sent_at     INTEGER,
    reason      TEXT,
    incident_json TEXT NOT NULL,  -- the incident revision this message is about
    UNIQUE (task_id, channel, seq)
);
CREATE INDEX notifications_open ON notifications (status) WHERE status IN ('pending', 'failed');

CREATE TABLE api_tokens (
    token_id      TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'duty_officer', 'inspector', 'enterprise')),
    enterprise_id TEXT,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
"""


def _v1(db: Database) -> None:
    for statement in V1.split(";"):
        if statement.strip():
            db.execute(statement)


def _v2(db: Database) -> None:
    for statement in V2_TASKS.split(";\n"):
        if statement.strip():
            db.execute(statement)
    # Tasks an older release had not delivered get their first notification in the outbox.
    db.execute(
        "INSERT INTO notifications (task_id, department, channel, seq, kind, created_at, status, incident_json)"
        " SELECT task_id, department, 'webhook', 0, 'task', created_at, 'pending', incident_json"
        " FROM tasks WHERE delivery_status != 'delivered'"
    )


def _v3(db: Database) -> None:
    # Revisions: the newest incident event each task has taken in (a replayed older one is
    # not notified again), and whether its route wants the all-clear.
    db.execute("ALTER TABLE tasks ADD COLUMN incident_rev INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE tasks ADD COLUMN send_resolved INTEGER NOT NULL DEFAULT 1")
    db.execute("UPDATE tasks SET incident_rev = COALESCE(json_extract(incident_json, '$.updated_at'), 0)")


def _v4(db: Database) -> None:
    # Silences, and messages held back (by a silence or an inhibiting incident) until it ends:
    # still `pending`, with `held_by` saying what holds them; the outbox sends only unheld ones.
    db.execute(
        "CREATE TABLE silences (silence_id TEXT PRIMARY KEY, matcher_json TEXT NOT NULL, starts_at INTEGER NOT NULL,"
        " ends_at INTEGER NOT NULL, created_by TEXT NOT NULL, reason TEXT NOT NULL, created_at INTEGER NOT NULL,"
        " expired_at INTEGER)"
    )
    db.execute("ALTER TABLE notifications ADD COLUMN held_by TEXT")
    db.execute("CREATE INDEX notifications_held ON notifications (held_by) WHERE held_by IS NOT NULL")


def _v5(db: Database) -> None:
    # Public reports (举报投诉) and their photos. A report becomes an incident of its own (its
    # tasks live in `tasks`); `status` is the report's own outcome: dispatched, linked to an
    # existing incident, or closed as unfounded. `source_hash` (a salted hash of the sender's
    # address) lets a duty officer see that reports came from one source without keeping the address.
    db.execute(
        "CREATE TABLE reports (tracking TEXT PRIMARY KEY, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
        " status TEXT NOT NULL CHECK (status IN ('dispatched', 'linked', 'unfounded')),"
        " what TEXT NOT NULL, enterprise_id TEXT, address TEXT, region TEXT NOT NULL, happened_at INTEGER NOT NULL,"
        " contact TEXT, source_hash TEXT NOT NULL, incident_id TEXT NOT NULL, linked_incident_id TEXT,"
        " reason TEXT, decided_by TEXT, photos INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("CREATE INDEX reports_incident ON reports (incident_id)")
    db.execute("CREATE INDEX reports_updated ON reports (updated_at)")
    # Each open console reads the newest change twice a second: keep that an index lookup.
    db.execute("CREATE INDEX incidents_received ON incidents (received_at)")
    db.execute(
        "CREATE TABLE report_photos (tracking TEXT NOT NULL REFERENCES reports (tracking), idx INTEGER NOT NULL,"
        " content_type TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (tracking, idx))"
    )


def _v6(db: Database) -> None:
    # Two lookups made for every message, which read whole tables without an index: inhibition
    # looks for open incidents with the same `equal` labels (the shipped rule: the same site),
    # and every delivery attempt counts the attempts before it. Written once in the store's SQL:
    # it runs on both databases.
    db.execute("CREATE INDEX incidents_site ON incidents (json_extract(incident_json, '$.site_id'))")
    db.execute("CREATE INDEX deliveries_notification ON deliveries (notification_id)")


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]
SCHEMA_VERSION = len(MIGRATIONS)

# The schema of version 5, where a PostgreSQL store starts (tables in foreign-key order).
# tests/unit/test_alert_schema.py checks it has the columns the SQLite steps end with.
BASELINE_VERSION = 5
BASELINE = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, department TEXT NOT NULL, enterprise_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('new', 'delivered', 'escalated', 'acknowledged', 'in_progress', 'resolved', 'closed')),
    delivery_status TEXT NOT NULL CHECK (delivery_status IN ('pending', 'delivered', 'failed')),
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, ack_deadline INTEGER NOT NULL,
    escalation_level INTEGER NOT NULL DEFAULT 0, next_escalation_at INTEGER, acknowledged_by TEXT,
    acknowledged_at INTEGER, ack_note TEXT, assignee TEXT, incident_json TEXT NOT NULL,
    incident_rev INTEGER NOT NULL DEFAULT 0, send_resolved INTEGER NOT NULL DEFAULT 1,
    UNIQUE (incident_id, department)
);
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_department ON tasks (department, status);
CREATE INDEX tasks_enterprise ON tasks (enterprise_id);
CREATE INDEX tasks_escalation ON tasks (next_escalation_at) WHERE next_escalation_at IS NOT NULL;
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL REFERENCES tasks (task_id),
    attempt INTEGER NOT NULL, at INTEGER NOT NULL, url TEXT NOT NULL, http_status INTEGER, error TEXT,
    ok INTEGER NOT NULL, notification_id INTEGER
);
CREATE INDEX deliveries_task ON deliveries (task_id);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL REFERENCES tasks (task_id), at INTEGER NOT NULL,
    event TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL, actor TEXT NOT NULL, detail TEXT, source TEXT
);
CREATE INDEX audit_task ON audit (task_id);
CREATE TABLE incidents (
    incident_id TEXT PRIMARY KEY, severity TEXT NOT NULL, status TEXT NOT NULL, updated_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL, incident_json TEXT NOT NULL, enterprise_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX incidents_enterprise ON incidents (enterprise_id);
CREATE INDEX incidents_received ON incidents (received_at);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL REFERENCES tasks (task_id),
    department TEXT NOT NULL, channel TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    created_at INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    sent_at INTEGER, reason TEXT, incident_json TEXT NOT NULL, held_by TEXT,
    UNIQUE (task_id, channel, seq)
);
CREATE INDEX notifications_open ON notifications (status) WHERE status IN ('pending', 'failed');
CREATE INDEX notifications_held ON notifications (held_by) WHERE held_by IS NOT NULL;
CREATE TABLE api_tokens (
    token_id TEXT PRIMARY KEY, name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'duty_officer', 'inspector', 'enterprise')),
    enterprise_id TEXT, token_hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER
);
CREATE TABLE silences (
    silence_id TEXT PRIMARY KEY, matcher_json TEXT NOT NULL, starts_at INTEGER NOT NULL, ends_at INTEGER NOT NULL,
    created_by TEXT NOT NULL, reason TEXT NOT NULL, created_at INTEGER NOT NULL, expired_at INTEGER
);
CREATE TABLE reports (
    tracking TEXT PRIMARY KEY, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('dispatched', 'linked', 'unfounded')), what TEXT NOT NULL,
    enterprise_id TEXT, address TEXT, region TEXT NOT NULL, happened_at INTEGER NOT NULL, contact TEXT,
    source_hash TEXT NOT NULL, incident_id TEXT NOT NULL, linked_incident_id TEXT, reason TEXT, decided_by TEXT,
    photos INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX reports_incident ON reports (incident_id);
CREATE INDEX reports_updated ON reports (updated_at);
CREATE TABLE report_photos (
    tracking TEXT NOT NULL REFERENCES reports (tracking), idx INTEGER NOT NULL, content_type TEXT NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (tracking, idx)
);
"""


def migrate(db: Database) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it had before."""
    return _migrate_postgres(db) if db.dialect == "postgresql" else _migrate_sqlite(db)


def _newer(before: int) -> RuntimeError:
    return RuntimeError(
        f"task store has schema version {before}, newer than this release's {SCHEMA_VERSION}; upgrade safewatch"
    )


def _migrate_postgres(db: Database) -> int:
    # One transaction under the store's write lock: a second process waits, then finds it done.
    with db.transaction():
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        before = row[0] if row else 0
        if before > SCHEMA_VERSION:
            raise _newer(before)
        if before == 0:
            for statement in BASELINE.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (BASELINE_VERSION,))
        for version in range(max(before, BASELINE_VERSION) + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](db)
            db.execute("UPDATE schema_version SET version = ?", (version,))
    return before


def _migrate_sqlite(db: Database) -> int:
    before = db.execute("PRAGMA user_version").fetchone()[0]
    if before > SCHEMA_VERSION:
        raise _newer(before)
    # Rebuilding a table that others reference needs foreign keys off (outside a transaction).
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        for version in range(before + 1, SCHEMA_VERSION + 1):
            with db.transaction():
                # Another process (the CLI beside the service) may have migrated while we waited.
                if db.execute("PRAGMA user_version").fetchone()[0] < version:
                    MIGRATIONS[version - 1](db)
                    db.execute(f"PRAGMA user_version = {version}")
    finally:
        db.execute("PRAGMA foreign_keys=ON")
    return before
