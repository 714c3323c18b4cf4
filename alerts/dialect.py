"""The task store's connection, on SQLite or PostgreSQL, and the few differences between them.

The store and its neighbours write one SQL: SQLite's spelling (`?` placeholders, `INTEGER`,
`BLOB`, `json_extract(col, '$.key')`, `INSERT OR IGNORE`), portable otherwise (`ON CONFLICT`,
`RETURNING`). On PostgreSQL each statement is rewritten once (cached) and rows read like
`sqlite3.Row` (by index or by column name), so no caller knows which database it talks to.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg

# What a failing database raises, whichever it is (the consumer retries on these).
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
# PostgreSQL has no database-wide write lock like SQLite's BEGIN IMMEDIATE; one transaction-scoped
# advisory lock gives the same one-writer-at-a-time rule, so read-then-write steps (the next
# sequence number, an escalation's level check) stay race-free across processes too.
WRITE_LOCK = 7_007_007


class Cursor(Protocol):
    """What callers use of a DB-API cursor."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


def is_postgres(target: str | Path) -> bool:
    """Whether a store target is a PostgreSQL URL (else it is a SQLite file)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def display(target: str | Path) -> str:
    """The target for logs: a URL without its password."""
    if not is_postgres(target):
        return str(target)
    parts = urlsplit(str(target))
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2 and ":" in netloc[0]:
        netloc[0] = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc="@".join(netloc)))


class Database:
    """One connection, shared by threads under a lock, with the dialect's transaction rules."""

    def __init__(self, target: str | Path) -> None:
        self.dialect: Literal["sqlite", "postgresql"] = "postgresql" if is_postgres(target) else "sqlite"
        self.lock = threading.RLock()
        self.memo: dict[Any, Any] = {}  # what a write transaction looked up once (emptied per transaction)
        self._pg: psycopg.Connection[Any] | None = None
        self._lite: sqlite3.Connection | None = None
        if self.dialect == "postgresql":
            # Autocommit: a lone read needs no BEGIN; transaction() opens one explicitly.
            self._pg = psycopg.connect(str(target), autocommit=True, row_factory=_pg_row)
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lite = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._lite.row_factory = sqlite3.Row
            self._lite.execute("PRAGMA journal_mode=WAL")
            # FULL: a stored task must survive power loss, because the Kafka offset is committed
            # right after it and the incident will not be read again.
            self._lite.execute("PRAGMA synchronous=FULL")
            self._lite.execute("PRAGMA busy_timeout=5000")
            # A fetch's transaction writes every task's incident JSON several times; SQLite's default
            # 2 MB page cache spills such a transaction to the WAL before its commit.
            self._lite.execute("PRAGMA cache_size=-65536")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement (SQLite spelling) and return its cursor."""
        if self._pg is not None:
            return self._pg.execute(_to_postgres(sql), tuple(params))
        assert self._lite is not None
        return self._lite.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        if self._pg is not None:
            with self._pg.cursor() as cur:
                cur.executemany(_to_postgres(sql), [tuple(r) for r in rows])
            return
        assert self._lite is not None
        self._lite.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One write transaction: only one at a time, in this process and across processes."""
        with self.lock:
            self.memo = {}
            if self._pg is not None:
                self._pg.execute("BEGIN")
                self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            else:
                self.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.execute("ROLLBACK")
                raise
            self.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            if self._pg is not None:
                self._pg.close()
            if self._lite is not None:
                self._lite.close()


class PgRow(tuple):
    """A PostgreSQL row that reads like sqlite3.Row: by index, by column name, `keys()`, `dict(row)`."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self.names)


def _pg_row(cursor: Any) -> Any:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        row = PgRow(values)
        row.names = names
        return row

    return make


_JSON_EXTRACT = re.compile(r"json_extract\(\s*([\w.]+)\s*,\s*'\$\.(\w+)'\s*\)")
_OR_IGNORE = re.compile(r"\bINSERT OR IGNORE INTO\b(.*)$", re.S)


@lru_cache(maxsize=1024)
def _to_postgres(sql: str) -> str:
    """SQLite spelling → PostgreSQL: types, JSON access, ignore-on-conflict, placeholders."""
    sql = sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)  # epoch milliseconds outgrow 32 bits
    sql = re.sub(r"\bBLOB\b", "BYTEA", sql)
    sql = _JSON_EXTRACT.sub(r"(\1::jsonb ->> '\2')", sql)
    sql = _OR_IGNORE.sub(r"INSERT INTO\1 ON CONFLICT DO NOTHING", sql)
    # psycopg's placeholders are %s, so a literal % must be doubled; no statement here has a `?`
    # inside a string literal.
    return sql.replace("%", "%%").replace("?", "%s")
