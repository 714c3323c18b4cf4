"""`safewatch history …`: inspectors' queries at the command line (mounted by safewatch/cli.py)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from config.settings import get_settings

from .classes import Refused
from .export import render
from .filters import FilterError, Filters, make_filters
from .service import Caller, History
from .timefmt import RangeError, parse_range

history_app = typer.Typer(
    help="Inspectors' histories: hazards, incidents, timelines, stats, exports.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True, soft_wrap=True)

SINCE = typer.Option(None, help="start: 7d (ago), 2026-12-01, 2026-12-01T08:00 (local), now; default 7 days ago")
UNTIL = typer.Option(None, help="end (exclusive), same forms; default now")
ENTERPRISE = typer.Option(None, help="credit code or name")
SITE = typer.Option(None, help="site id")
SENSOR = typer.Option(None, help="sensor id")
REGION = typer.Option(None, help="division code prefix: 32, 3201, 320115")
SECTOR = typer.Option(None, help="hazchem, mine, dust, ammonia, steel, casting")
RULE = typer.Option(None, help="rule id")
LEVEL = typer.Option(None, help="hazard level (1, 2, …) or colour (red, orange, yellow, blue)")
LIMIT = typer.Option(50, help="rows per page")
OFFSET = typer.Option(0, help="rows to skip")
FORMAT = typer.Option("table", "--format", help="table, json or csv")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _caller() -> Caller:
    """The local user: the command line runs with the machine's own rights, still audited."""
    return Caller(who=f"cli:{getpass.getuser()}", role="admin")


def _open() -> History:
    return History(get_settings())


def _filters(h: History, since, until, enterprise, site, sensor, region, sector, rule, level) -> Filters:
    start, end = parse_range(since, until, h.tz)
    return make_filters(
        h.registry,
        start,
        end,
        enterprise=enterprise,
        site=site,
        sensor=sensor,
        region=region,
        sector=sector,
        rule=rule,
        level=level,
    )


def _guard(fn):
    """Turn the history errors into one clear line and exit code 2."""
    try:
        return fn()
    except (FilterError, RangeError, LookupError, Refused, ValueError) as exc:
        _fail(str(exc))


COLUMNS = {
    "hazards": (
        "start_local",
        "end_local",
        "enterprise_name",
        "site_name",
        "sensor_id",
        "sensor_quantity",
        "kind",
        "level",
        "severity",
        "rule_id",
        "peak",
        "hazard_id",
    ),
    "incidents": (
        "opened_at_local",
        "closed_at_local",
        "enterprise_name",
        "site_name",
        "region_name",
        "sector",
        "severity",
        "status",
        "hazards",
        "rule_id",
        "incident_id",
    ),
}


def _print_rows(kind: str, rows: list[dict[str, Any]], fmt: str, footer: str = "") -> None:
    if fmt in ("json", "csv"):
        sys.stdout.write(render(rows, fmt))
        return
    if not sys.stdout.isatty():  # piped: whole cells, tab-separated, never cut to a terminal's width
        print("\t".join(COLUMNS[kind]))
        for r in rows:
            print("\t".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS[kind]))
        err.print(footer)
        return
    table = Table(caption=footer)
    for c in COLUMNS[kind]:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS[kind]))
    console.print(table)


def _list(kind: str, since, until, enterprise, site, sensor, region, sector, rule, level, limit, offset, fmt) -> None:
    h = _open()
    try:
        f = _guard(lambda: _filters(h, since, until, enterprise, site, sensor, region, sector, rule, level))
        p = _guard(lambda: h.page(_caller(), kind, f, limit, offset))
        if fmt == "json":
            sys.stdout.write(orjson.dumps(p.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        more = " (scan limit reached: narrow the range)" if p.truncated else ""
        footer = f"{p.offset + 1}–{p.offset + len(p.rows)} of {p.total}, times {h.tz.key}{more}"
        _print_rows(kind, p.rows, fmt, footer)
    finally:
        h.close()


@history_app.command("hazards")
def hazards(
    since: str = SINCE,
    until: str = UNTIL,
    enterprise: str = ENTERPRISE,
    site: str = SITE,
    sensor: str = SENSOR,
    region: str = REGION,
    sector: str = SECTOR,
    rule: str = RULE,
    level: str = LEVEL,
    limit: int = LIMIT,
    offset: int = OFFSET,
    fmt: str = FORMAT,
) -> None:
    """Hazards (one row per hazard, newest first) matching every filter given."""
    _list("hazards", since, until, enterprise, site, sensor, region, sector, rule, level, limit, offset, fmt)


@history_app.command("incidents")
def incidents(
    since: str = SINCE,
    until: str = UNTIL,
    enterprise: str = ENTERPRISE,
    site: str = SITE,
    region: str = REGION,
    sector: str = SECTOR,
    rule: str = RULE,
    level: str = LEVEL,
    limit: int = LIMIT,
    offset: int = OFFSET,
    fmt: str = FORMAT,
) -> None:
    """Incidents (one row per incident, newest first); `--level` is a colour here."""
    _list("incidents", since, until, enterprise, site, None, region, sector, rule, level, limit, offset, fmt)


@history_app.command("readings")
def readings_cmd(
    sensor: str = SENSOR,
    site: str = SITE,
    enterprise: str = ENTERPRISE,
    since: str = SINCE,
    until: str = UNTIL,
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
) -> None:
    """Readings per bucket (min, mean, max, last, count) from raw or a roll-up, whichever fits the range."""
    h = _open()
    try:
        f = _guard(lambda: _filters(h, since, until, enterprise, site, sensor, None, None, None, None))
        out = _guard(lambda: h.readings(_caller(), f))
        err.print(f"{len(out['points'])} buckets of {out['interval_s']} s from {out['rp']}, times {out['tz']}")
        sys.stdout.write(render(out["points"], fmt) if fmt == "csv" else orjson.dumps(out).decode() + "\n")
    finally:
        h.close()


@history_app.command("export")
def export(
    kind: str = typer.Argument(..., help="hazards or incidents"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    out: Path = typer.Option(None, help="file to write; default stdout"),
    since: str = SINCE,
    until: str = UNTIL,
    enterprise: str = ENTERPRISE,
    site: str = SITE,
    sensor: str = SENSOR,
    region: str = REGION,
    sector: str = SECTOR,
    rule: str = RULE,
    level: str = LEVEL,
) -> None:
    """Every matching row as CSV or JSON (up to SAFEWATCH_HISTORY_MAX_ROWS), written to the audit log."""
    h = _open()
    try:
        f = _guard(lambda: _filters(h, since, until, enterprise, site, sensor, region, sector, rule, level))
        rows, truncated = _guard(lambda: h.rows(_caller(), kind, f, export=True))
        text = _guard(lambda: render(rows, fmt))
        if out:
            out.write_text(text, encoding="utf-8")
            err.print(f"{len(rows)} {kind} written to {out}" + (" (scan limit reached)" if truncated else ""))
        else:
            sys.stdout.write(text)
    finally:
        h.close()


@history_app.command("timeline")
def timeline(
    incident_id: str = typer.Argument(...), fmt: str = typer.Option("table", "--format", help="table or json")
) -> None:
    """An incident's state changes, the hazards that led to it, and the readings around each."""
    h = _open()
    try:
        t = _guard(lambda: h.timeline(_caller(), incident_id))
        if fmt == "json":
            sys.stdout.write(orjson.dumps(t, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        i = t["incident"]
        console.print(
            f"[bold]{i['incident_id']}[/] {i['severity']} {i['status']} — "
            f"{i['enterprise_name']} ({i['enterprise_id']}),"
            f" {i['site_name']} ({i['site_id']}); opened {i['opened_at_local']}, closed {i['closed_at_local'] or '—'}"
            f" ({i['tz']})"
        )
        for e in t["entries"]:
            console.print(f"  {e['ts_local']}  {e['what']}")
    finally:
        h.close()


@history_app.command("stats")
def stats_cmd(
    enterprise: str = typer.Option(..., help="credit code or name"),
    since: str = SINCE,
    until: str = UNTIL,
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """One enterprise: alarms per day and per rule, top sensors, time in alarm, MTTA (tasks) and MTTR (incidents)."""
    from alerts.store import TaskStore

    h = _open()
    try:
        f = _guard(lambda: _filters(h, since, until, enterprise, None, None, None, None, None, None))
        tasks: list[dict[str, Any]] = []
        # The alert service's store, SQLite or PostgreSQL; a SQLite file not yet created has no tasks.
        target = h.settings.alerts_store
        if not isinstance(target, Path) or target.exists():
            store = TaskStore(target)
            try:
                tasks = [t.model_dump() for t in store.list_tasks(enterprise_id=f.enterprise_id, limit=100_000)]
            finally:
                store.close()
        s = _guard(lambda: h.stats(_caller(), f, tasks))
        if fmt == "json":
            sys.stdout.write(orjson.dumps(s, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        console.print(f"[bold]{s['enterprise_name']}[/] ({s['enterprise_id']}) {s['since_local']} – {s['until_local']}")
        console.print(
            f"hazards opened {s['hazards_opened']}, time in alarm {s['time_in_alarm_s'] / 3600:.1f} h, "
            f"MTTA {s['mtta_s']} s over {s['acknowledged_tasks']} tasks, MTTR {s['mttr_s']} s over "
            f"{s['closed_incidents']} closed incidents"
        )
        console.print("per day: " + ", ".join(f"{d} {n}" for d, n in s["alarms_per_day"].items()))
        console.print("per rule: " + ", ".join(f"{r} {n}" for r, n in s["alarms_per_rule"].items()))
        for t in s["top_sensors"]:
            console.print(f"  {t['sensor']}: {t['hazards']} hazards, {t['alarm_s'] / 60:.1f} min in alarm")
    finally:
        h.close()


@history_app.command("accidents")
def accidents(
    import_: Path = typer.Option(None, "--import", exists=True, dir_okay=False, help="CSV or JSON file to import"),
    since: str = typer.Option("3650d", help="start of the listing"),
    until: str = UNTIL,
    enterprise: str = ENTERPRISE,
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
) -> None:
    """Import accident records (all or none), or list them."""
    from .accidents import read_accidents

    h = _open()
    try:
        if import_:
            records = _guard(lambda: read_accidents(import_, h.registry, h.tz))
            n = h.add_accidents(_caller(), records, str(import_))
            console.print(f"{len(records)} accident records read, {n} new")
            return
        f = _guard(lambda: _filters(h, since, until, enterprise, None, None, None, None, None, None))
        rows = h.accidents(_caller(), f)
        if fmt in ("json", "csv"):
            sys.stdout.write(render(rows, fmt))
            return
        for r in rows:
            console.print(
                f"{r['ts_local']}  {r['enterprise_name']} ({r['enterprise_id']})  {r['type']}  "
                f"deaths {r['deaths']} injuries {r['injuries']}  {r['summary']}"
            )
    finally:
        h.close()


@history_app.command("associate")
def associate_cmd(
    since: str = typer.Option("365d", help="start of the history analysed"),
    until: str = UNTIL,
    enterprise: str = ENTERPRISE,
    sector: str = SECTOR,
    window_days: int = typer.Option(30, help="an accident within this many days after a hazard counts"),
    recent_days: int = typer.Option(30, help="hazards this recent make up an enterprise's risk score"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Hazard kinds and rules that come before accidents (support, confidence, lift), and risk per enterprise."""
    h = _open()
    try:
        f = _guard(lambda: _filters(h, since, until, enterprise, None, None, None, sector, None, None))
        out = _guard(lambda: h.associate(_caller(), f, window_days, recent_days))
        if fmt == "json":
            sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        table = Table(caption=f"{out['hazards']} hazards, {out['accidents']} accidents, window {window_days} d")
        for c in (
            "by",
            "item",
            "sector",
            "item days",
            "then accident",
            "support",
            "confidence",
            "base",
            "lift",
            "z",
            "associated",
        ):
            table.add_column(c)
        for a in out["associations"][:40]:
            table.add_row(
                a["by"],
                a["item"],
                a["sector"],
                str(a["days_with_item"]),
                str(a["days_with_both"]),
                f"{a['support']:.4f}",
                f"{a['confidence']:.3f}",
                f"{a['base_rate']:.3f}",
                f"{a['lift']:.2f}",
                f"{a['z']:.1f}",
                "yes" if a["associated"] else "",
            )
        console.print(table)
        for r in out["risk"][:20]:
            console.print(
                f"risk {r['score']:.3f}  {r['enterprise_name']} ({r['enterprise_id']})  {', '.join(r['items'])}"
            )
    finally:
        h.close()


@history_app.command("setup")
def setup(
    backfill: str = typer.Option(
        None, help="also roll up raw points since then (e.g. 7d): CQs cover only the recent past"
    ),
) -> None:
    """Create the retention policies and continuous queries (`stack up` does this too); optionally backfill."""
    from .retention import backfill as run_backfill
    from .retention import ensure_retention
    from .timefmt import now_ms

    settings = get_settings()
    _guard(lambda: ensure_retention(settings))
    console.print(
        f"policies raw ({settings.influx_raw_retention}, default), rollup_1m ({settings.influx_rollup_1m_retention}),"
        f" rollup_1h ({settings.influx_rollup_1h_retention}); "
        + (
            "no continuous queries: run `safewatch history rollup --loop` (SAFEWATCH_INFLUX_ROLLUP_JOB)"
            if settings.influx_rollup_job
            else "continuous queries cq_reading_rollup_1m/_1h"
        )
    )
    if backfill:
        from zoneinfo import ZoneInfo

        start, end = _guard(lambda: parse_range(backfill, None, ZoneInfo(settings.history_tz)))
        written = run_backfill(settings, start, now_ms())
        console.print(f"backfilled: {written}")


@history_app.command("rollup")
def rollup_cmd(
    loop: bool = typer.Option(False, "--loop", help="run every SAFEWATCH_INFLUX_ROLLUP_EVERY_S until stopped"),
    since: str = typer.Option(None, help="recompute from then (e.g. 7d), whatever was done before"),
) -> None:
    """Roll raw readings up into rollup_1m and rollup_1h by query + write (InfluxDB 2.x: no continuous queries)."""
    import logging
    from zoneinfo import ZoneInfo

    import httpx

    from .rollup import rollup_all, run_every
    from .timefmt import now_ms

    settings = get_settings()
    if loop:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        run_every(settings, settings.influx_rollup_every_s)
    start = None
    if since:
        start, _ = _guard(lambda: parse_range(since, None, ZoneInfo(settings.history_tz)))
    try:
        written = rollup_all(settings, now_ms(), start)
    except (RuntimeError, httpx.HTTPError) as exc:
        _fail(f"roll-up stopped, the next run resumes from the last hour done: {exc}", 1)
    console.print("points written: " + ", ".join(f"{rp} {n}" for rp, n in written.items()))


grafana_app = typer.Typer(help="Grafana dashboards and datasources, generated by code.", no_args_is_help=True)


@grafana_app.command("build")
def grafana_build(
    check: bool = typer.Option(False, "--check", help="only check the committed files equal what the code generates"),
) -> None:
    """Write deploy/grafana/ (dashboards and provisioning) from history/dashboards.py."""
    from .dashboards import OUT, rendered, write

    if check:
        stale = [rel for rel, text in rendered().items() if not (OUT / rel).exists() or (OUT / rel).read_text() != text]
        if stale:
            _fail("out of date, run `safewatch grafana build`: " + ", ".join(stale), 1)
        console.print("deploy/grafana is up to date")
        return
    for path in write():
        console.print(f"wrote {path}")
