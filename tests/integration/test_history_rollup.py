"""`safewatch history rollup` (the roll-ups for InfluxDB 2.x) writes what the continuous queries write, on the
real InfluxDB 1.x: same raw points into two databases, one rolled up by its continuous queries, one by the job."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest

from history.retention import ROLLUP_1H, ROLLUP_1M, backfill, ensure_retention, run
from history.rollup import PROGRESS, progress, rollup_all
from streams.influx import query, rows

from .pipeline_helpers import env_of

MIN, HOUR = 60_000, 3_600_000
SERIES = [
    "reading,area=t1,enterprise_id=e1,region=320100,sector=hazchem,sensor_id=s1,site_id=x,unit=%LEL",
    "reading,area=t1,enterprise_id=e1,quality=bad,region=320100,sector=hazchem,sensor_id=s1,site_id=x,unit=%LEL",
    "reading,enterprise_id=e1,region=320100,sector=hazchem,sensor_id=s2,site_id=x,unit=°C",
]
TAGS = ("area", "enterprise_id", "quality", "region", "sector", "sensor_id", "site_id", "unit")


def _raw(now: int) -> list[str]:
    """Readings every 10 s: two hours from 5 h ago, and the last 8 minutes; a bad-quality series, whole values."""
    spans = [(now - 5 * HOUR, now - 3 * HOUR), (now - 8 * MIN, now - MIN)]
    out = []
    for i, head in enumerate(SERIES):
        for lo, hi in spans:
            for n, t in enumerate(range(lo // 10_000 * 10_000, hi, 10_000)):
                value = float(n % 7) if i == 2 else 20.0 + (n % 13) * 0.37 + i
                if i != 1 or n % 9 == 0:  # bad readings are rare
                    out.append(f"{head} value={value!r} {t}")
    return out


def _points(settings, rp: str, before: int) -> set[tuple]:
    got = rows(query(settings, f'SELECT * FROM "{settings.influx_db}"."{rp}"."reading" WHERE time < {before}ms'))
    return {(r["time"], *(r.get(t) for t in TAGS), r["min"], r["mean"], r["max"], r["last"], r["count"]) for r in got}


def _field_types(settings, rp: str) -> dict[str, str]:
    series = query(settings, f'SHOW FIELD KEYS FROM "{settings.influx_db}"."{rp}"."reading"')
    return {v[0]: v[1] for s in series for v in s["values"]}


@pytest.fixture(scope="module")
def dbs(stack):
    """Two databases with the same raw points: `cq` with continuous queries, `job` without."""
    tag = uuid.uuid4().hex[:8]
    # A one-day raw retention keeps the job's first run (it looks back over the whole retention) short.
    cq = stack.model_copy(update={"influx_db": f"rollup_cq_{tag}", "influx_raw_retention": "1d"})
    job = cq.model_copy(update={"influx_db": f"rollup_job_{tag}", "influx_rollup_job": True})
    now = int(time.time() * 1000)
    lines = "\n".join(_raw(now))
    for s in (cq, job):
        ensure_retention(s)
        resp = httpx.post(f"{s.influx}/write", params={"db": s.influx_db, "precision": "ms"}, content=lines)
        assert resp.status_code == 204, resp.text
    yield cq, job, now
    for s in (cq, job):
        run(s, f'DROP DATABASE "{s.influx_db}"')


def test_job_mode_sets_up_no_continuous_queries(dbs):
    cq, job, _ = dbs
    shown = query(cq, "SHOW CONTINUOUS QUERIES")
    names = {s["name"]: {v[0] for v in s.get("values", [])} for s in shown}
    assert names[cq.influx_db] == {"cq_reading_rollup_1m", "cq_reading_rollup_1h"}
    assert not names.get(job.influx_db)


def test_the_job_writes_what_the_continuous_queries_write(dbs):
    cq, job, now = dbs
    # 1. The real 1-minute continuous query: it runs at the next minute and covers the last 15 minutes.
    minutes = f"SELECT count(value) FROM reading WHERE time >= {now - 10 * MIN}ms GROUP BY time(1m), * fill(none)"
    want = len(rows(query(cq, minutes)))
    deadline = time.monotonic() + 90
    while len(recent_cq := _points(cq, ROLLUP_1M, now)) < want and time.monotonic() < deadline:
        time.sleep(2)
    assert len(recent_cq) == want > 0, "the continuous query did not run within 90 s"

    # 2. The job, stopped for hours: a run four hours ago, then one now catches up.
    first = rollup_all(job, now_ms=now - 4 * HOUR)
    assert first[ROLLUP_1M] > 0 and progress(job, ROLLUP_1M) == (now - 4 * HOUR) // MIN * MIN
    caught_up = rollup_all(job, now_ms=now)
    assert caught_up[ROLLUP_1M] > 0 and caught_up[ROLLUP_1H] > 0
    assert progress(job, ROLLUP_1H) == now // HOUR * HOUR

    # The minutes the real continuous query wrote are the job's, point for point (tags, values, types).
    recent_job = {p for p in _points(job, ROLLUP_1M, now) if p[0] >= now - 10 * MIN}
    assert recent_job == recent_cq

    # 3. Every whole interval against the continuous queries' own statement over the whole range.
    backfill(cq, now - 6 * HOUR, now)
    for rp, step in ((ROLLUP_1M, MIN), (ROLLUP_1H, HOUR)):
        whole = now // step * step  # the job leaves the interval still running for its next run
        want_points = _points(cq, rp, whole)
        assert _points(job, rp, whole) == want_points and len(want_points) > 3, rp
        assert (
            _field_types(job, rp)
            == _field_types(cq, rp)
            == {"min": "float", "mean": "float", "max": "float", "last": "float", "count": "integer"}
        )

    # 4. Idempotent: running again changes nothing; an interval is not redone until a new one is whole.
    whole = {ROLLUP_1M: now // MIN * MIN, ROLLUP_1H: now // HOUR * HOUR}
    before = {rp: _points(job, rp, t) for rp, t in whole.items()}
    again = rollup_all(job, now_ms=now)
    assert again == {ROLLUP_1M: 0, ROLLUP_1H: 0}
    later = rollup_all(job, now_ms=now + MIN)
    assert later[ROLLUP_1M] > 0  # a new minute is whole: the resample window (15 min) is recomputed
    new_hour = (now + MIN) // HOUR > now // HOUR  # the test may run across an hour's end
    assert (later[ROLLUP_1H] > 0) == new_hour
    assert {rp: _points(job, rp, t) for rp, t in whole.items()} == before
    assert rows(query(job, f'SELECT count("through") FROM "{job.influx_db}"."{ROLLUP_1M}"."{PROGRESS}"'))[0]["count"]

    # 5. A late reading (a drained spool) five minutes back is rolled up by the next run, as by the CQ.
    late_at = now // MIN * MIN - 5 * MIN + 1_234
    late = f"{SERIES[0]} value=99.5 {late_at}"
    for s in (cq, job):
        assert (
            httpx.post(f"{s.influx}/write", params={"db": s.influx_db, "precision": "ms"}, content=late).status_code
            == 204
        )
    rollup_all(job, now_ms=now + 2 * MIN)
    backfill(cq, late_at, late_at + 1)
    minute = now // MIN * MIN
    assert _points(job, ROLLUP_1M, minute) == _points(cq, ROLLUP_1M, minute)
    assert any(p[0] == late_at // MIN * MIN and p[-3] == 99.5 for p in _points(job, ROLLUP_1M, minute))


def test_the_command_line(dbs):
    _, job, _ = dbs
    got = subprocess.run(
        [sys.executable, "-m", "safewatch", "history", "rollup"],
        env=env_of(job),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0 and "points written: rollup_1m" in got.stdout, got.stderr
