"""The `safewatch` command: one entry point, a subcommand per job."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from config.logs import setup_logging
from config.settings import get_settings
from config.topics import SECTORS, TOKENS_TOPIC, telemetry_topic
from history.cli import grafana_app, history_app

app = typer.Typer(
    help="safewatch: real-time emergency and work-safety monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The embedded local stack: Tansu broker, InfluxDB 1.x, mosquitto.", no_args_is_help=True)
alerts_app = typer.Typer(help="The alert service.", no_args_is_help=True)
registry_app = typer.Typer(help="The registry of enterprises, sites and sensors.", no_args_is_help=True)
rules_app = typer.Typer(help="The rule catalogue.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(alerts_app, name="alerts")
app.add_typer(registry_app, name="registry")
app.add_typer(rules_app, name="rules")
app.add_typer(history_app, name="history")
app.add_typer(grafana_app, name="grafana")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one error per line, even when piped


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@stack_app.command("install")
def stack_install() -> None:
    """Install what the stack and its tests need that pip cannot (InfluxDB, mosquitto, Chromium, Prometheus,
    PostgreSQL)."""
    from .stack import install_chromium, install_influxdb, install_mosquitto, install_postgresql, install_prometheus

    try:
        install_influxdb()
        install_mosquitto()
        install_chromium()
        install_prometheus()
        install_postgresql()
    except Exception as exc:  # the message says what to do
        _fail(str(exc))


@stack_app.command("up")
def stack_up() -> None:
    """Start the broker and InfluxDB (idempotent) and create the topics."""
    from streams.worker import topic_specs

    from .stack import ensure_topics, stack_status
    from .stack import stack_up as up

    settings = get_settings()
    try:
        up(settings)
        ensure_topics(settings, topic_specs(settings))
    except Exception as exc:
        _fail(str(exc))
    _print_status(stack_status(settings))


@stack_app.command("down")
def stack_down() -> None:
    """Stop the processes `stack up` started."""
    from .stack import stack_down as down

    down(get_settings())


@stack_app.command("status")
def stack_status_cmd() -> None:
    """Each part of the stack, its address and health."""
    from .stack import stack_status

    parts = stack_status(get_settings())
    _print_status(parts)
    if not all(p.healthy for p in parts):
        raise typer.Exit(1)


def _print_status(parts) -> None:
    table = Table("part", "address", "pid", "healthy", "note")
    for p in parts:
        table.add_row(p.name, p.address, str(p.pid or "-"), "yes" if p.healthy else "[red]no[/]", p.note or "")
    console.print(table)


@app.command()
def worker(
    loglevel: str = typer.Option("info", help="log level (debug shows Faust's and aiokafka's own INFO lines)"),
) -> None:
    """Run the stream worker (Faust) until interrupted."""
    from streams.worker import run_worker, topic_specs

    from .stack import ensure_topics_when_reachable

    settings = get_settings()
    setup_logging("worker", loglevel)
    ensure_topics_when_reachable(settings, topic_specs(settings))
    run_worker(settings, loglevel=loglevel)


@app.command()
def scope(loglevel: str = typer.Option("info", help="log level")) -> None:
    """Run correlation's scope stage alone (enterprise and region scopes, risk colours) until interrupted.

    `safewatch worker` runs it too unless SAFEWATCH_SCOPE_STAGE=false; run this then."""
    from sensors.registry import load_registry
    from streams.scope_stage import run_alone
    from streams.worker import topic_specs

    from .stack import ensure_topics_when_reachable

    settings = get_settings()
    setup_logging("scope", loglevel)
    ensure_topics_when_reachable(settings, topic_specs(settings))
    run_alone(settings, load_registry(settings.registry))


@alerts_app.command("serve")
def alerts_serve(loglevel: str = typer.Option("info", help="log level")) -> None:
    """Run the alert service: consume incidents and maintenance notices, dispatch tasks, serve the HTTP API."""
    from alerts.service import serve

    setup_logging("alerts", loglevel)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(get_settings()))


# --- alert service: routing check and generated county routes (issue 7) -----------------------


@alerts_app.command("check")
def alerts_check(path: Path = typer.Argument(None, help="routing file; default SAFEWATCH_ROUTING")) -> None:
    """Validate a routing file (and its routes_files); every error names the file, line and field."""
    from alerts.routing import RoutingError, all_routes, load_routing

    settings = get_settings()
    path = path or settings.routing
    try:
        routing = load_routing(path, alerts_api=settings.alerts_api)
    except RoutingError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False)
        _fail(f"{len(exc.issues)} problem(s) in {path}")
    console.print(f"{path}: ok — {len(routing.departments)} departments, {len(all_routes(routing))} routes")


@alerts_app.command("counties")
def alerts_counties(
    prefix: str = typer.Option(..., help="region code prefix of the province (or city), e.g. 32"),
    webhook: str = typer.Option(
        "${ALERTS_API}/inbox/county-{code}", help="webhook of each county; {code} is its region code"
    ),
    registry: Path = typer.Option(None, exists=True, dir_okay=False, help="default SAFEWATCH_REGISTRY"),
    out: Path = typer.Option(None, help="write here instead of stdout"),
) -> None:
    """Generate one department and one route per county from the registry's regions (a routes_file)."""
    from alerts.counties import county_routes_yaml
    from sensors.registry import RegistryError, load_registry

    try:
        reg = load_registry(registry or get_settings().registry)
    except RegistryError as exc:
        _fail(str(exc))
    text = county_routes_yaml(reg.regions.values(), prefix=prefix, webhook=webhook)
    if out is None:
        print(text, end="")
    else:
        out.write_text(text, encoding="utf-8")
        err.print(f"wrote {out}")


# --- alert service: silences (issue 7) --------------------------------------------------------
silence_app = typer.Typer(help="Silences: hold back matching messages for a while (on record).", no_args_is_help=True)
alerts_app.add_typer(silence_app, name="silence")


@silence_app.command("add")
def silence_add(
    matchers: list[str] = typer.Argument(..., help="key=value[,value]: site_ids, enterprise_ids, severities, …"),
    minutes: float = typer.Option(..., help="how long it lasts from now"),
    reason: str = typer.Option(..., help="why (kept with the silence)"),
    by: str = typer.Option(..., help="who sets it"),
) -> None:
    """Add a silence starting now; prints its id."""
    from alerts.silences import parse_matchers
    from alerts.store import TaskStore, now_ms

    try:
        matcher = parse_matchers(matchers)
    except ValueError as exc:
        _fail(str(exc))
    store = TaskStore(get_settings().alerts_store)
    try:
        now = now_ms()
        silence = store.add_silence(
            matcher, starts_at=now, ends_at=now + round(minutes * 60_000), created_by=by, reason=reason, now=now
        )
    except ValueError as exc:
        _fail(str(exc))
    finally:
        store.close()
    print(silence.silence_id)


@silence_app.command("list")
def silence_list(all_: bool = typer.Option(False, "--all", help="also those that ended")) -> None:
    """Silences in force (or all): id, start, end, who, why, matchers (tab-separated)."""
    from alerts.store import TaskStore, now_ms

    store = TaskStore(get_settings().alerts_store)
    try:
        found = store.silences(active_at=None if all_ else now_ms())
    finally:
        store.close()
    print("id\tstarts_ms\tends_ms\texpired_ms\tby\treason\tmatcher")
    for x in found:
        matcher = x.matcher.model_dump_json(exclude_none=True)
        print(
            f"{x.silence_id}\t{x.starts_at}\t{x.ends_at}\t{x.expired_at or ''}\t{x.created_by}\t{x.reason}\t{matcher}"
        )


@silence_app.command("expire")
def silence_expire(silence_id: str = typer.Argument(...)) -> None:
    """End a silence now; the service tells what is still open at its next tick."""
    from alerts.store import TaskStore

    store = TaskStore(get_settings().alerts_store)
    try:
        store.expire_silence(silence_id)
    except KeyError:
        _fail(f"no silence {silence_id}")
    except ValueError as exc:
        _fail(str(exc))
    finally:
        store.close()
    console.print(f"expired {silence_id}")


# --- alert service: API tokens (issue 7) -----------------------------------------------------
token_app = typer.Typer(help="API tokens of the alert service (hashed at rest; shown once).", no_args_is_help=True)
alerts_app.add_typer(token_app, name="token")


@token_app.command("issue")
def token_issue(
    name: str = typer.Argument(..., help="who holds it, e.g. 'Suzhou duty desk'"),
    role: str = typer.Option(..., help="admin, duty_officer, inspector or enterprise"),
    enterprise: str = typer.Option(None, help="with --role enterprise: its unified social credit code"),
) -> None:
    """Issue a token and print it once (only its hash is kept)."""
    from alerts.auth import issue_token
    from alerts.store import TaskStore

    store = TaskStore(get_settings().alerts_store)
    try:
        info, secret = issue_token(store, name, role, enterprise)
    except ValueError as exc:
        _fail(str(exc))
    finally:
        store.close()
    err.print(f"issued {info.token_id} ({info.role}) for {info.name}; it is shown once, keep it safe:")
    print(secret)  # alone on stdout, so `TOKEN=$(safewatch alerts token issue …)` works


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="the token's id (tok-…), from `token list`")) -> None:
    """Revoke a token at once."""
    from alerts.auth import revoke_token
    from alerts.store import TaskStore

    store = TaskStore(get_settings().alerts_store)
    try:
        if not revoke_token(store, token_id):
            _fail(f"no live token {token_id}")
    finally:
        store.close()
    console.print(f"revoked {token_id}")


@token_app.command("list")
def token_list() -> None:
    """Every token issued: id, holder, role, enterprise, when issued and revoked (never the secret)."""
    from alerts.auth import list_tokens
    from alerts.store import TaskStore

    store = TaskStore(get_settings().alerts_store)
    try:
        tokens = list_tokens(store)
    finally:
        store.close()
    print("id\tname\trole\tenterprise\tissued_ms\trevoked_ms")  # tab-separated: greppable, never cut short
    for t in tokens:
        print(f"{t.token_id}\t{t.name}\t{t.role}\t{t.enterprise_id or ''}\t{t.created_at}\t{t.revoked_at or ''}")


@registry_app.command("check")
def registry_check(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Validate a registry file; every error names the file, line and field."""
    from sensors.registry import RegistryError, load_registry

    try:
        reg = load_registry(path)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(
        f"{path}: ok — {len(reg.enterprises)} enterprises, {len(reg.sites)} sites, {len(reg.sensors)} sensors"
    )


@rules_app.command("check")
def rules_check(
    directory: Path = typer.Argument(None, help="default: rules/catalog"),
    correlation: Path = typer.Option(None, help="correlation rules; default: rules/correlation"),
) -> None:
    """Validate rule and correlation files; every error names the file, line and field; exits non-zero on any."""
    from config.topics import SECTORS
    from rules.catalog import CATALOG_DIR, CatalogError, load_catalog
    from rules.patterns import CorrelationRuleError, load_correlation_rules

    directory = directory or CATALOG_DIR
    correlation = correlation or get_settings().correlation_dir
    try:
        catalog = load_catalog(directory)
    except CatalogError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False)
        _fail(f"{len(exc.issues)} problem(s) in {directory}")
    n = sum(len(f.rules) for f in catalog.sectors.values())
    console.print(
        f"{directory}: ok — {n} rules in {len(catalog.sectors)} sector files ({', '.join(sorted(catalog.sectors))})"
    )
    ids = {r.id for f in catalog.sectors.values() for r in f.rules}
    try:
        linked = load_correlation_rules(correlation, set(SECTORS), ids)
    except CorrelationRuleError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False)
        _fail(f"{len(exc.issues)} problem(s) in {correlation}")
    hot = sum(r.hot for r in linked)
    console.print(
        f"{correlation}: ok — {len(linked)} correlation rules ({hot} site/area, {len(linked) - hot} regional)"
    )


@app.command()
def simulate(
    duration: float = typer.Option(60.0, help="seconds of simulated time to produce"),
    rate: float = typer.Option(1.0, help="ticks per wall-clock second (1 = real time; 0 = as fast as possible)"),
    seed: int = typer.Option(0),
    scenarios: bool = typer.Option(True, help="inject the demo scenarios (leak, silent sensor, malformed burst)"),
) -> None:
    """Simulate every site of the registry and produce frames to the telemetry topics."""
    from .demo import run_simulation

    asyncio.run(run_simulation(get_settings(), duration_s=duration, rate=rate, seed=seed, scenarios=scenarios))


@app.command()
def produce(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of readings or frames"),
    topic: str = typer.Option(None, help="topic to send to; default telemetry.<sector> of each site"),
    json_out: bool = typer.Option(False, "--json", help="print the counts as one JSON object (for scripts)"),
) -> None:
    """Send a JSONL file of readings or frames to the broker (the operators' producer)."""
    from sensors.producer import TelemetryProducer, produce_file
    from sensors.registry import load_registry

    settings = get_settings()
    reg = load_registry(settings.registry)
    site_sector = {sid: s.sector for sid, s in reg.sites.items()}

    async def run():
        async with TelemetryProducer(
            settings.bootstrap, linger_ms=settings.producer_linger_ms, timeout_s=settings.producer_timeout_s
        ) as producer:
            return await produce_file(
                producer, path, topic=topic, site_sector=site_sector, topic_prefix=settings.topic_prefix
            )

    counts = asyncio.run(run())
    if json_out:
        import dataclasses
        import json

        print(json.dumps({"file": str(path), **dataclasses.asdict(counts)}))
        return
    print(produce_summary(path, counts))  # plain: rich would fold long paths at 80 columns in a pipe


def produce_summary(path: Path, counts) -> str:
    """What `produce` did, in sentences an operator reads at a glance."""
    lines = [f"{path}: {counts.lines} lines read, {counts.sent} sent"]
    lines += [f"  {n:>8}  → {t}" for t, n in sorted(counts.by_topic.items())]
    if counts.invalid_json:
        lines.append(f"  {counts.invalid_json} not JSON: sent anyway, the worker dead-letters them (malformed_json)")
    if counts.unknown_site:
        lines.append(f"  {counts.unknown_site} name no site of the registry: sent to the previous line's topic")
    if counts.skipped:
        lines.append(f"  {counts.skipped} NOT sent: no line names a known site, no topic could be told (use --topic)")
    return "\n".join(lines)


@app.command()
def replay(
    src: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of readings or frames"),
    registry: Path = typer.Option(None, "--registry", exists=True, dir_okay=False),
    out: Path = typer.Option(..., "--out", help="where hazard and incident events go (JSONL)"),
    rules: Path = typer.Option(None, "--rules", help="rule catalogue directory; default rules/catalog"),
    maintenance: Path = typer.Option(None, "--maintenance", help="maintenance windows YAML"),
    registry_only: bool = typer.Option(False, "--registry-only", help="thresholds from registry set points only"),
    batch_size: int = typer.Option(1000),
    correlation: Path = typer.Option(None, "--correlation", help="correlation rules; default rules/correlation"),
    scopes: bool = typer.Option(True, help="run the scope stage (enterprise and region scopes, risk) after stage 1"),
) -> None:
    """Run the rule engine over a recorded file in event-time order; no broker needed."""
    from rules.catalog import CatalogError, load_catalog
    from rules.maintenance import MaintenanceError, load_maintenance
    from rules.patterns import CorrelationRuleError, load_correlation_rules
    from rules.replay import replay_file
    from sensors.registry import RegistryError, load_registry

    settings = get_settings()
    try:
        reg = load_registry(registry or settings.registry)
        catalog = None if registry_only else load_catalog(rules or settings.rules_dir)
        windows = load_maintenance(maintenance or settings.maintenance, set(reg.sensors) | set(reg.sites))
        corr = load_correlation_rules(correlation or settings.correlation_dir)
    except (RegistryError, CatalogError, MaintenanceError, CorrelationRuleError) as exc:
        _fail(str(exc))
    report = replay_file(
        src,
        reg,
        out,
        catalog=catalog,
        maintenance=windows,
        correlation_rules=corr,
        correlation_window_s=settings.correlation_window_s,
        incident_quiet_s=settings.incident_quiet_s,
        lateness_s=settings.lateness_s,
        batch_size=batch_size,
        correlation=corr if scopes else None,
        risk=settings.risk_enabled,
        scope_quiet_s=settings.scope_quiet_s,
    )
    for line in report.errors[:20]:
        err.print(line, markup=False, highlight=False)  # input text may hold [brackets]
    if len(report.errors) > 20:
        err.print(f"... and {len(report.errors) - 20} more")
    console.print(
        f"{report.readings} readings → {report.hazards} hazard events, {report.incidents} incident events, "
        f"{report.notices} notice events"
        + (f", {report.scope_incidents} scope incident events, {report.risks} risk changes" if scopes else "")
        + f" → {out}"
        + (f"; refused: {dict(report.refused)}" if report.refused else "")
    )


@app.command()
def demo(
    duration: float = typer.Option(60.0, help="seconds the plants are simulated"),
    keep: bool = typer.Option(True, help="leave the worker and alert service running afterwards"),
) -> None:
    """Set up the embedded stack, run worker + alerts, simulate all six sectors, print a summary."""
    from .demo import run_demo

    sys.exit(run_demo(get_settings(), duration_s=duration, keep=keep))


@app.command()
def bench(
    readings: int = typer.Option(500_000, help="readings per pipeline run"),
    frame_size: int = typer.Option(50, help="readings per frame"),
    rate: int = typer.Option(20_000, help="readings/s offered in the latency run"),
    latency_seconds: float = typer.Option(15.0, help="length of the latency run"),
    peak_rate: int = typer.Option(50_000, help="readings/s of a second latency run in frames (0: none)"),
    single_rate: int = typer.Option(20_000, help="single-reading messages/s of a latency run (0: none)"),
    rules: bool = typer.Option(False, "--rules", help="instead: the rule engine alone, full catalogue vs thresholds"),
    correlation: bool = typer.Option(
        False, "--correlation", help="instead: the rule engine with and without the correlation rules"
    ),
    sensors: int = typer.Option(10_000, help="with --rules / --correlation: sensors in the scaled registry"),
    storage: bool = typer.Option(False, "--storage", help="instead: raw broker rates, memory vs s3 storage"),
    workers: int = typer.Option(0, "--workers", help="instead: 1 and then N workers in one group, rates and CPU cost"),
    soak: float = typer.Option(0.0, "--soak", help="instead: MINUTES of live load at --rate, worker memory over time"),
    history: bool = typer.Option(False, "--history", help="instead: history query latency, raw vs downsampled"),
    reuse_end: int | None = typer.Option(None, help="with --history: query an earlier run's data (its end, ms)"),
    quix_python: Path | None = typer.Option(
        None, help="a Python with quixstreams: also run the single-reading messages through a Quix Streams app"
    ),
    gateway: bool = typer.Option(
        False, "--gateway", help="instead: one ingest gateway, HTTP frames/s and MQTT msgs/s vs raw produce"
    ),
    request_frames: int = typer.Option(1000, help="with --gateway: frames per HTTP request"),
    concurrency: int = typer.Option(4, help="with --gateway: HTTP requests in flight"),
    alerts: bool = typer.Option(
        False, "--alerts", help="instead: the alert service's incidents/s and first-delivery latency, both stores"
    ),
    incidents: int = typer.Option(5000, help="with --alerts: incidents per throughput run"),
    incident_rate: float = typer.Option(50.0, help="with --alerts: incidents/s offered in the latency run"),
    postgres: bool = typer.Option(True, help="with --alerts: also on a throwaway PostgreSQL cluster"),
) -> None:
    """Raw broker limit vs the pipeline: readings/s and end-to-end latency percentiles."""
    if alerts:
        from .alerts_bench import run_alerts_bench

        run_alerts_bench(
            get_settings(), incidents_n=incidents, rate=incident_rate, seconds=latency_seconds, postgres=postgres
        )
        return
    if history:
        from history.bench import run_history_bench

        from .stack import stack_up

        stack_up(get_settings())
        run_history_bench(get_settings(), n_sensors=sensors if sensors != 10_000 else 1000, reuse_end=reuse_end)
    if gateway:
        from .gateway_bench import run_gateway_bench

        n = max(readings // frame_size, 1)
        run_gateway_bench(
            get_settings(),
            frames_total=n,
            frame_size=frame_size,
            request_frames=request_frames,
            concurrency=concurrency,
            mqtt_total=n,
        )
        return
    if storage:
        from .bench import run_storage_bench

        run_storage_bench(get_settings(), messages=max(readings // frame_size, 1), frame_size=frame_size)
        return
    if soak:
        from .soak_bench import run_soak

        run_soak(get_settings(), minutes=soak, rate=rate)
        return
    if workers:
        from .workers_bench import run_workers_bench

        run_workers_bench(get_settings(), workers=workers, readings=readings, frame_size=frame_size)
        return
    if correlation:
        from .correlation_bench import run_correlation_bench

        run_correlation_bench(get_settings(), sensors=sensors, readings=max(readings, 3_000_000))
        return
    if rules:
        from .rules_bench import run_rules_bench

        run_rules_bench(get_settings(), sensors=sensors, readings=max(readings, 1_000_000))
        return
    from .bench import run_bench

    run_bench(
        get_settings(),
        readings=readings,
        frame_size=frame_size,
        rate=rate,
        latency_seconds=latency_seconds,
        peak_rate=peak_rate,
        single_rate=single_rate,
        quix_python=quix_python,
    )


@app.command()
def sectors() -> None:
    """List the sector ids and their telemetry topics."""
    prefix = get_settings().topic_prefix
    for s in SECTORS:
        console.print(f"{s}\t{telemetry_topic(s, prefix)}")


# --- ingest gateway and enterprise tokens (issue 10) ------------------------------------------
enterprise_app = typer.Typer(help="Enterprises' own credentials for the ingest gateway.", no_args_is_help=True)
enterprise_token_app = typer.Typer(
    help="Enterprise tokens: HTTP bearer token and MQTT password (hashed at rest; shown once).", no_args_is_help=True
)
app.add_typer(enterprise_app, name="enterprise")
enterprise_app.add_typer(enterprise_token_app, name="token")


def _token_table(settings):
    """The tokens topic (created if missing) read up to now, with a legacy SQLite file moved into it."""
    from ingest.token_topic import load_table
    from streams.worker import topic_specs

    from .stack import ensure_topics_when_reachable

    topic = settings.topic(TOKENS_TOPIC)
    ensure_topics_when_reachable(settings, {topic: topic_specs(settings)[topic]})
    return asyncio.run(load_table(settings))


@enterprise_token_app.command("issue")
def enterprise_token_issue(
    enterprise: str = typer.Argument(..., help="the enterprise's unified social credit code"),
    name: str = typer.Option(..., help="who holds it, e.g. 'tank farm gateway'"),
) -> None:
    """Issue a token for an enterprise of the registry; prints the secret alone on stdout, once."""
    from ingest.token_topic import publish
    from ingest.tokens import new_token
    from sensors.registry import RegistryError, load_registry

    from .mosquitto import enterprise_topics, sync_auth

    settings = get_settings()
    try:
        reg = load_registry(settings.registry)
    except RegistryError as exc:
        _fail(str(exc))
    if enterprise not in reg.enterprises:
        _fail(f"no enterprise {enterprise!r} in {settings.registry} (give its unified social credit code)")
    try:
        token, secret = new_token(enterprise, name)
    except ValueError as exc:
        _fail(str(exc))
    table = _token_table(settings)
    asyncio.run(publish(settings, [token]))  # acks=all: every gateway sees it within a second or so
    table.apply(token)
    sync_auth(settings, table)
    err.print(
        f"issued {token.token_id} for {enterprise} ({reg.enterprises[enterprise].name}), held by {name}.\n"
        f"HTTP: Authorization: Bearer <token>; MQTT: user {token.token_id}, password <token>, "
        f"topics {enterprise_topics(enterprise)}. The token is shown once, keep it safe:",
        markup=False,
    )
    print(secret)  # alone on stdout: TOKEN=$(safewatch enterprise token issue ...)


@enterprise_token_app.command("revoke")
def enterprise_token_revoke(token_id: str = typer.Argument(..., help="the token's id (ent-…), from `list`")) -> None:
    """Revoke a token: every gateway refuses it over HTTP within ~1 s, mosquitto at its next login."""
    from ingest.token_topic import publish
    from ingest.tokens import revoked

    from .mosquitto import sync_auth

    settings = get_settings()
    table = _token_table(settings)
    token = table.get(token_id)
    if token is None or token.revoked_at is not None:
        _fail(f"no live token {token_id}")
    record = revoked(token)
    asyncio.run(publish(settings, [record]))
    table.apply(record)
    sync_auth(settings, table)
    console.print(f"revoked {token_id}")


@enterprise_token_app.command("list")
def enterprise_token_list() -> None:
    """Every enterprise token: id, enterprise, holder, issued and revoked (never the secret)."""
    tokens = _token_table(get_settings()).list()
    print("id\tenterprise\tname\tissued_ms\trevoked_ms")  # tab-separated: greppable
    for t in tokens:
        print(f"{t.token_id}\t{t.enterprise_id}\t{t.name}\t{t.created_at}\t{t.revoked_at or ''}")


@app.command()
def gateway(
    mqtt: bool = typer.Option(True, help="also take telemetry from mosquitto (shared subscription, QoS 1)"),
    loglevel: str = typer.Option("info", help="log level"),
) -> None:
    """Run the ingest gateway: HTTP POST /v1/telemetry, GET /v1/feed, and MQTT in; all out to Kafka."""
    from ingest.service import serve
    from streams.worker import topic_specs

    from .mosquitto import gateway_password, sync_auth
    from .stack import ensure_topics_when_reachable

    settings = get_settings()
    setup_logging("gateway", loglevel)
    ensure_topics_when_reachable(settings, topic_specs(settings))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                settings,
                gateway_password(settings) if mqtt else None,
                # mosquitto's accounts follow the tokens topic (in compose, mosquitto waits for these files)
                on_tokens=(lambda table: sync_auth(settings, table)) if mqtt else None,
                log_level=loglevel,
            )
        )
