"""Accident records and the data-access audit log, in one SQLite file (`SAFEWATCH_HISTORY_DB`)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .accidents import Accident

SCHEMA = """
CREATE TABLE IF NOT EXISTS accidents (
    accident_id TEXT PRIMARY KEY,
    enterprise_id TEXT NOT NULL,
    site_id TEXT,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    deaths INTEGER NOT NULL DEFAULT 0,
    injuries INTEGER NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS accidents_enterprise ON accidents (enterprise_id, ts);
CREATE TABLE IF NOT EXISTS access_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    data_kind TEXT NOT NULL,
    data_class TEXT NOT NULL,
    rows INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


class HistoryStore:
    """Thread-safe access to the history SQLite file (FastAPI runs plain endpoints in threads)."""

    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def add_accidents(self, accidents: list[Accident], source: str) -> int:
        """Store accidents; one already stored (same id) is left as it was. Returns how many were new."""
        now = int(time.time() * 1000)
        with self.tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO accidents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*a.model_dump().values(), source, now) for a in accidents],
            )
            return db.total_changes - before

    def accidents(
        self, *, enterprise_id: str | None = None, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[Accident]:
        """Accidents, oldest first, filtered."""
        sql, args = "SELECT * FROM accidents WHERE 1=1", list[object]()
        for clause, value in (("enterprise_id = ?", enterprise_id), ("ts >= ?", start_ms), ("ts < ?", end_ms)):
            if value is not None:
                sql += f" AND {clause}"
                args.append(value)
        with self.lock:
            got = self.db.execute(sql + " ORDER BY ts, accident_id", args).fetchall()
        return [Accident(**{k: r[k] for k in Accident.model_fields}) for r in got]

    def audit(self, who: str, role: str, action: str, data_kind: str, data_class: str, rows: int, detail: str) -> None:
        """Record one read or export."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO access_audit (at, who, role, action, data_kind, data_class, rows, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (int(time.time() * 1000), who, role, action, data_kind, data_class, rows, detail),
            )

    def audit_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit entries first."""
        with self.lock:
            got = self.db.execute("SELECT * FROM access_audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in got]
