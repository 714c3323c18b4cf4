"""`safewatch history rollup`: roll-ups without continuous queries (InfluxDB 2.x has none), by InfluxQL query + write.

Each run aggregates raw `reading` into `rollup_1m` and `rollup_1h` exactly as the continuous queries do (the
same SELECT, read back and written as line protocol, since 2.x refuses `SELECT … INTO`), for every whole
interval since the last run minus the continuous queries' resample window. Progress is kept in InfluxDB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx

from config.settings import Settings
from streams.influx import _auth, escape_tag, query

from .retention import AGGREGATES, INTERVAL, RESAMPLE_FOR, ROLLUP_1H, ROLLUP_1M, ident
from .timefmt import duration_s

log = logging.getLogger(__name__)

STEP_MS = {ROLLUP_1M: 60_000, ROLLUP_1H: 3_600_000}
# One query per hour of raw points: ~360 k points for 1,000 sensors at 10 s, a few MB of JSON back.
CHUNK_MS = 3_600_000
PROGRESS = "rollup_progress"  # measurement in each roll-up policy: `through` = end of the last interval done


def _source(settings: Settings) -> str:
    # Where the worker writes: its policy if named, else the database's default (`raw` on 1.x, the
    # bucket mapped as default on 2.x), so no extra DBRP mapping is needed to read it.
    if settings.influx_rp:
        return f"{ident(settings.influx_db)}.{ident(settings.influx_rp)}.reading"
    return "reading"


def select(settings: Settings, rp: str, start_ms: int, end_ms: int) -> str:
    """The continuous query's SELECT without INTO, over [start, end), empty intervals left out."""
    fields = ", ".join(f"{fn}(value) AS {fn}" for fn in AGGREGATES)
    return (
        f"SELECT {fields} FROM {_source(settings)} WHERE time >= {start_ms}ms AND time < {end_ms}ms"
        f" GROUP BY time({INTERVAL[rp]}), * fill(none)"
    )


def lines(series: list[dict]) -> Iterator[str]:
    """Line protocol of the aggregates, tags as the series had them (an empty tag is absent, as with INTO)."""
    for s in series:
        head = "reading" + "".join(f",{k}={escape_tag(v)}" for k, v in sorted(s.get("tags", {}).items()) if v)
        cols = s["columns"]
        for row in s["values"]:
            v = dict(zip(cols, row, strict=True))
            # JSON gives 3.0 back as 3: the float fields are written as floats, count as an integer.
            floats = ",".join(f"{fn}={float(v[fn])!r}" for fn in AGGREGATES if fn != "count")
            yield f"{head} {floats},count={int(v['count'])}i {v['time']}"


def write(settings: Settings, rp: str, body: list[str]) -> None:
    """POST lines to one policy; raise unless all are stored (the run stops, progress stays where it was)."""
    params, headers = _auth(settings)
    step = settings.influx_batch_points
    for i in range(0, len(body), step):
        resp = httpx.post(
            f"{settings.influx}/write",
            params={**params, "rp": rp, "precision": "ms"},
            content="\n".join(body[i : i + step]).encode(),
            headers=headers,
            timeout=60.0,
        )
        if resp.status_code != 204:
            raise RuntimeError(f"writing roll-ups to {rp}: HTTP {resp.status_code} {resp.text[:300]}")


def progress(settings: Settings, rp: str) -> int | None:
    """End of the last interval rolled up into `rp` by this job, or None before its first run."""
    got = query(settings, f'SELECT last("through") FROM {ident(settings.influx_db)}.{ident(rp)}.{PROGRESS}')
    return int(got[0]["values"][0][1]) if got else None


def rollup(settings: Settings, rp: str, now_ms: int, since_ms: int | None = None) -> int:
    """Roll up every whole interval not yet done (and the resample window before it) into `rp`; points written."""
    step = STEP_MS[rp]
    end = now_ms // step * step  # whole intervals only, as a continuous query run at that moment
    done = progress(settings, rp)
    # Raw points older than their retention are gone; with no retention (INF), a first run looks back 30 days.
    keep_s = duration_s(settings.influx_raw_retention) or 30 * 86_400
    oldest = (now_ms - keep_s * 1000) // step * step
    if since_ms is not None:
        start = max(oldest, since_ms // step * step)  # asked for: redo from there whatever is done
    elif done is None:
        start = oldest  # first run: whatever raw points there are
    elif done >= end:
        return 0  # like RESAMPLE EVERY: nothing until a new interval is whole
    else:
        # Recompute the resample window too: readings that arrived late (or from a spool) are included.
        start = max(oldest, done - duration_s(RESAMPLE_FOR[rp]) * 1000)
    written = 0
    for lo in range(start, end, CHUNK_MS):
        hi = min(lo + CHUNK_MS, end)
        body = list(lines(query(settings, select(settings, rp, lo, hi), timeout=300.0)))
        write(settings, rp, body)
        # Progress after the points: a run stopped half-way redoes this chunk, never skips it.
        write(settings, rp, [f"{PROGRESS} through={hi}i {hi}"])
        written += len(body)
    return written


def rollup_all(settings: Settings, now_ms: int | None = None, since_ms: int | None = None) -> dict[str, int]:
    """One run of both roll-ups; points written per policy."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return {rp: rollup(settings, rp, now, since_ms) for rp in (ROLLUP_1M, ROLLUP_1H)}


def run_every(settings: Settings, every_s: float) -> None:
    """Run forever; a failed run is logged and the next one catches up from the stored progress."""
    while True:
        started = time.monotonic()
        try:
            log.info("roll-up: %s", rollup_all(settings))
        except (httpx.HTTPError, RuntimeError) as exc:
            log.error("roll-up failed, retried next run: %s", exc)
        time.sleep(max(0.0, every_s - (time.monotonic() - started)))
