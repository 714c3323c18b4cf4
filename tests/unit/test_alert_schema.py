"""Schema versions on both databases: PostgreSQL's baseline equals what the SQLite steps build,
later steps run on both, a newer store is refused, and the SQL rewriting between them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from alerts.dialect import WRITE_LOCK, Database, _to_postgres
from alerts.schema import BASELINE, BASELINE_VERSION, MIGRATIONS, SCHEMA_VERSION
from alerts.silences import InhibitRule, Matcher
from alerts.store import TaskStore
from safewatch.postgres import TempPostgres

from .test_alert_store import T0, incident


def columns(db, tables) -> dict[str, list[str]]:
    return {t: sorted(r[1] for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}


def test_the_postgresql_baseline_has_the_columns_the_sqlite_steps_build():
    stepped = sqlite3.connect(":memory:")
    for step in MIGRATIONS[:BASELINE_VERSION]:
        step(stepped)
    baseline = sqlite3.connect(":memory:")
    baseline.executescript(BASELINE)  # SQLite reads the baseline too: it is written in the store's SQL
    tables = [
        r[0]
        for r in stepped.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith("sqlite_")
    ]
    assert columns(baseline, tables) == columns(stepped, tables)
    assert {
        r[0] for r in baseline.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    } == {r[0] for r in stepped.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def test_postgresql_starts_at_the_baseline_and_takes_every_later_step(postgres: TempPostgres):
    url = postgres.new_schema()
    store = TaskStore(url)
    assert store.dialect == "postgresql" and store.migrated_from == 0 and store.path is None
    with store.reading() as db:
        assert db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in db.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'incidents'")}
        assert "incidents_site" in indexes  # version 6, a step after the baseline
        kinds = dict(
            db.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'tasks'"
            ).fetchall()
        )
    assert kinds["created_at"] == "bigint" and kinds["incident_json"] == "text"  # epoch ms need 64 bits
    store.close()
    again = TaskStore(url)
    assert again.migrated_from == SCHEMA_VERSION
    again.close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer than this release"):
        TaskStore(url)


def test_statements_are_rewritten_for_postgresql():
    assert (
        _to_postgres("SELECT * FROM t WHERE a = ? AND b LIKE '5%'") == "SELECT * FROM t WHERE a = %s AND b LIKE '5%%'"
    )
    assert _to_postgres("CREATE TABLE x (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER, data BLOB)") == (
        "CREATE TABLE x (id BIGSERIAL PRIMARY KEY, at BIGINT, data BYTEA)"
    )
    assert _to_postgres("SELECT json_extract(i.incident_json, '$.title') AS title") == (
        "SELECT (i.incident_json::jsonb ->> 'title') AS title"
    )
    assert _to_postgres("INSERT OR IGNORE INTO t VALUES (?)") == "INSERT INTO t VALUES (%s) ON CONFLICT DO NOTHING"


def test_inhibition_reads_only_the_same_site(store_target: Path | str):
    store = TaskStore(store_target)
    store.inhibit_rules = [
        InhibitRule(source=Matcher(severities=["red"]), target=Matcher(severities=["yellow"]), equal=["site_id"])
    ]
    red = incident("red", incident_id="inc-red")
    store.record_incident(red, ["county"], 5, now=T0)
    elsewhere = incident("red", incident_id="inc-far").model_copy(update={"site_id": "site-2"})
    store.record_incident(elsewhere, ["county"], 5, now=T0)
    [held] = store.record_incident(incident("yellow", incident_id="inc-y"), ["county"], 30, now=T0 + 1)
    assert store.notifications(held.task_id)[0].held_by == "incident:inc-red"
    if isinstance(store_target, Path):
        with store.reading() as db:
            plan = " ".join(
                str(r[3])
                for r in db.execute(
                    "EXPLAIN QUERY PLAN SELECT incident_id FROM incidents WHERE status != 'closed'"
                    " AND json_extract(incident_json, '$.site_id') = ?",
                    ("site-1",),
                )
            )
        assert "incidents_site" in plan
    store.close()


def test_one_writer_at_a_time_on_postgresql(postgres: TempPostgres):
    url = postgres.new_schema()
    writer = Database(url)
    # While one transaction is open, another connection (another process) cannot take the write lock.
    with writer.transaction(), psycopg.connect(url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_LOCK,)).fetchone()[0] is False
    with psycopg.connect(url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_LOCK,)).fetchone()[0] is True
    writer.close()
