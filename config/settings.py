"""The one settings object: every knob, read from `SAFEWATCH_*` environment variables.

Defaults work on the embedded stack (`safewatch stack up`). Part of the `config` leaf: it
imports nothing of ours.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """All configuration of safewatch; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="SAFEWATCH_", extra="ignore")

    # --- local state and the embedded stack ---------------------------------------------
    state_dir: Path = Field(PROJECT_ROOT / ".safewatch", description="pid files, logs, InfluxDB data, SQLite")
    broker_host: str = "127.0.0.1"
    broker_port: int = 19092
    influx_host: str = "127.0.0.1"
    influx_port: int = 18086
    # "memory" loses every topic when the broker stops; "s3" keeps them in an object store
    # (Tansu's postgres engine is not compiled into the shipped binary, see the README).
    broker_storage: Literal["memory", "s3"] = Field("memory", description="embedded broker's storage engine")
    broker_s3_endpoint: str | None = Field(None, description="S3 endpoint for s3 storage; default an embedded one")
    broker_s3_bucket: str = "tansu"
    objectstore_port: int = Field(19000, description="port of the embedded S3 server (s3 storage only)")

    # --- Kafka ---------------------------------------------------------------------------
    broker_url: str | None = Field(None, description="host:port[,host:port]; default the embedded broker")
    topic_prefix: str = Field("", description="prefix of every topic name (the benchmark isolates its runs with it)")
    partitions: int = Field(4, description="partitions of every topic safewatch creates")
    # The embedded broker never answers a waiting fetch early, so end-to-end latency equals
    # this wait (Faust's own consumer hard-codes 1,500 ms; the worker reads telemetry with its own).
    fetch_wait_ms: int = 20
    # A short session timeout keeps the embedded broker's slow group join (about half the
    # session timeout) bearable.
    session_timeout_s: float = 10.0
    producer_linger_ms: int = 10
    producer_batch_bytes: int = Field(
        256 * 1024, ge=16384, description="most bytes of one producer batch per partition"
    )
    broker_wait_s: float = Field(300.0, description="how long a worker waits for an unreachable broker")
    # aiokafka fails a queued message after its request timeout (40 s by default), which would
    # drop readings during a broker restart; producers keep them this long instead.
    producer_timeout_s: float = Field(300.0, description="how long a producer keeps retrying one message")
    take_max: int = Field(1000, description="most telemetry messages one worker batch takes (getmany)")
    commit_interval_s: float = Field(1.0, description="how often a worker commits the offsets of finished batches")
    worker_id: str = "safewatch-worker"
    worker_web_port: int = Field(16066, description="port of the worker's Prometheus metrics")
    # 127.0.0.1 keeps metrics off the network on a laptop; in containers Prometheus scrapes from
    # another host, so compose sets 0.0.0.0.
    metrics_host: str = Field("127.0.0.1", description="address the worker's metrics listen on")

    # --- InfluxDB (v1 HTTP API: InfluxDB 1.x, 2.x with DBRP, 3.x) -------------------------
    influx_url: str | None = Field(None, description="default the embedded InfluxDB")
    influx_db: str = "safewatch"
    # None: the database's default retention policy (`raw`, created by `stack up`), so writes and
    # queries that name no policy keep working when retention changes.
    influx_rp: str | None = Field(None, description="retention policy the worker writes to; default the DB's default")
    influx_user: str | None = None
    influx_password: str | None = None
    influx_token: str | None = None
    influx_batch_points: int = 5000
    influx_write_concurrency: int = Field(4, ge=1, description="chunks written at once")
    influx_batches_in_flight: int = Field(
        4, ge=1, description="worker batches whose points may still be on their way to InfluxDB while the next is read"
    )
    influx_write_readings: bool = True
    # Set points beside the readings, so a chart draws them as lines over any range; every few minutes of a
    # sensor's event time is enough for that and costs ~3 % of the reading points at one reading per 10 s.
    influx_setpoint_every_s: float = Field(300.0, gt=0, description="how often a sensor's set points are stored")
    influx_timeout_s: float = Field(10.0, description="one /write request's timeout")
    influx_spool_dir: Path | None = Field(None, description="where unwritten points wait; default STATE_DIR/spool")
    influx_spool_max_bytes: int = Field(512 * 1024 * 1024, description="spool limit; when full the worker waits")

    # --- history, retention and downsampling (issue 9) ---------------------------------------
    influx_raw_retention: str = Field("30d", description="how long raw points are kept (the default RP `raw`)")
    influx_rollup_1m_retention: str = Field("400d", description="how long 1-minute aggregates are kept")
    influx_rollup_1h_retention: str = Field("1830d", description="how long 1-hour aggregates are kept")
    # Hazards, incidents and dead-letter counts are few: a copy of each is kept far longer than raw
    # readings, so histories and the accident association can look back years. Empty: no copy.
    influx_events_rp: str | None = Field("events", description="policy that keeps a long copy of event points")
    influx_events_retention: str = Field("1830d", description="how long the copy of events is kept")
    influx_rollups: bool = Field(True, description="history reads the roll-up policies for long or old ranges")
    # InfluxDB 2.x has no continuous queries: there `safewatch history rollup` makes the same roll-ups.
    influx_rollup_job: bool = Field(False, description="roll-ups by `history rollup`, not continuous queries")
    influx_rollup_every_s: float = Field(60.0, gt=0, description="how often `history rollup --loop` runs")
    history_tz: str = Field("Asia/Shanghai", description="time zone history output is shown in")
    history_max_rows: int = Field(100_000, ge=1, description="most rows one history query or export returns")
    history_db: Path | None = Field(None, description="SQLite of accident records and the data-access audit log")
    history_points: int = Field(600, ge=10, description="target points per series when history reads readings")

    # --- rules -----------------------------------------------------------------------------
    registry: Path = Field(PROJECT_ROOT / "sensors" / "data" / "registry.yaml")
    rules_dir: Path = Field(PROJECT_ROOT / "rules" / "catalog", description="the rule catalogue, one YAML per sector")
    maintenance: Path = Field(PROJECT_ROOT / "config" / "maintenance.yaml", description="maintenance windows")
    rules_reload_s: float = Field(2.0, description="how often the worker looks for changed rule/maintenance files")
    # Timers (offline, interlock deadlines) run on event time estimated from the newest reading;
    # this lag lets a partition that is a little behind catch up before silence counts.
    clock_lag_s: float = 2.0
    correlation_window_s: float = Field(300.0, description="window of `window` correlation rules that give none")
    incident_quiet_s: float = Field(
        300.0, description="an incident whose hazards all cleared resolves after this long with none back"
    )
    correlation_dir: Path = Field(
        PROJECT_ROOT / "rules" / "correlation", description="correlation rules (rules/patterns.py), read at start"
    )
    # After a worker restores a site (a start, a rebalance) the site's offline timers wait this long
    # on its own clock, so plants that were quiet meanwhile can report before site_offline fires.
    site_offline_grace_s: float = Field(
        120.0, ge=0, description="start-up grace of a restored site's offline timers (the site's own clock)"
    )
    # --- correlation's second stage: enterprise and region scopes (issue 13) ---
    scope_stage: bool = Field(True, description="run the scope stage in `safewatch worker` (else `safewatch scope`)")
    risk_enabled: bool = Field(True, description="compute enterprise risk colours (topic `risk`, `enterprise_risk`)")
    scope_quiet_s: float = Field(600.0, gt=0, description="a scope incident all clear this long closes")
    scope_clock_lag_s: float = Field(5.0, ge=0, description="scope timers run this far behind the wall clock")
    lateness_s: float = Field(60.0, description="readings older than a sensor's newest by more go to dead-letter")
    # Out-of-order readings are skipped by the rules (a sensor's state never goes back in time); a
    # hold evaluates each site's readings sorted, as replay does, at the cost of that much latency
    # (README, "Event time"). 0 keeps today's path: evaluated as they arrive.
    reorder_ms: int = Field(0, ge=0, description="how long (event time) a site's readings wait to be put in order")
    # A reading from the future would become its sensor's newest and make every true reading
    # after it look late, so it is refused; keep this below lateness_s.
    future_tolerance_s: float = Field(30.0, ge=0, description="readings further ahead of the wall clock are refused")

    # --- alerts -----------------------------------------------------------------------------
    routing: Path = Field(PROJECT_ROOT / "config" / "routing.yaml")
    alerts_db: Path | None = Field(None, description="SQLite task store; default under state_dir")
    # The one switch to PostgreSQL; repr=False because a URL may carry a password.
    alerts_db_url: str | None = Field(
        None, repr=False, description="PostgreSQL task store (postgresql://…); unset: the SQLite file alerts_db"
    )
    alerts_host: str = "127.0.0.1"
    alerts_port: int = 18080
    alerts_group: str = "safewatch-alerts"
    delivery_retries: int = 5
    delivery_timeout_s: float = 5.0
    delivery_backoff_s: float = Field(0.5, description="first retry delay of a delivery; doubles each retry")
    alerts_redeliver_s: float = Field(60.0, description="how often stored tasks not yet delivered are retried")
    # --- alerts: issue 7 (auth, workflow, escalation) ---
    alerts_demo_inbox: bool = Field(False, description="mount the demo inbox (the embedded demo turns it on)")
    alerts_escalation_tick_s: float = Field(1.0, description="how often due escalations are looked for")
    alerts_reload_s: float = Field(2.0, description="how often the routing file is looked at for changes")
    alerts_store_process: bool = Field(
        True, description="read and store incidents in a second process, so delivery has a core of its own"
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP relay for the email channel")
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = Field(None, repr=False)  # never printed with the settings
    smtp_starttls: bool = False
    smtp_from: str = "safewatch@localhost"
    sms_gateway_url: str | None = Field(None, description="HTTP SMS gateway the sms channel posts to")
    sms_gateway_token: str | None = Field(None, repr=False)  # sent as a Bearer token; never printed
    # --- alerts: issue 8 (duty console, public reports) ---
    console_poll_s: float = Field(0.5, gt=0, description="how often the console's event stream looks for changes")
    console_timezone: str = Field("Asia/Shanghai", description="the time zone the console shows times in")
    reports_per_hour: int = Field(5, ge=1, description="public reports accepted per source address per hour")
    reports_max_photos: int = Field(3, ge=0, description="photos one public report may carry")
    reports_photo_max_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="largest photo of a public report")
    reports_severity: Literal["blue", "yellow", "orange", "red"] = Field(
        "yellow", description="severity of the incident a public report opens (its acknowledge deadline)"
    )

    # --- ingest gateway: issue 10 (HTTP and MQTT in, per-enterprise credentials) ---
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 18090
    # Tokens live on the compacted topic `enterprise-tokens`; a token file from before that is moved there once.
    ingest_db: Path | None = Field(None, description="legacy SQLite token file to migrate; default under state_dir")
    # A gateway's token consumer waits this long per fetch: a revocation reaches every gateway within ~2x this.
    ingest_tokens_wait_ms: int = Field(500, gt=0, description="fetch wait of the gateways' token consumer")
    # Feed statistics go to InfluxDB so every gateway answers /v1/feed alike (docs/influx-schema.md).
    feed_flush_s: float = Field(10.0, gt=0, description="how often a gateway writes its feed counts to InfluxDB")
    ingest_instance: str | None = Field(None, description="this gateway's name in feed points; default host:port")
    # HTTPS straight from the gateway; without these it serves plain HTTP (TLS ends at a load balancer).
    ingest_tls_cert: Path | None = Field(None, description="PEM certificate (chain) for HTTPS")
    ingest_tls_key: Path | None = Field(None, description="PEM private key for HTTPS")
    ingest_max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="largest request body as sent (413)")
    # gzip makes small bodies large: the limit after inflating stops a zip bomb.
    ingest_max_inflated_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest body after gunzip (413)")
    ingest_max_items: int = Field(20_000, gt=0, description="most frames/readings in one request (413)")
    ingest_rate_per_s: float = Field(100_000.0, gt=0, description="items/s one enterprise may send per gateway (429)")
    ingest_burst_s: float = Field(2.0, gt=0, description="seconds of ingest_rate_per_s an enterprise may send at once")
    # A sensor is silent when nothing arrived for this many of its sampling periods (feed health).
    feed_silent_periods: float = Field(3.0, gt=0, description="periods without a reading before a sensor is silent")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 11883
    mqtt_user: str = Field("safewatch-gateway", description="the gateway's own MQTT account")
    mqtt_password: str | None = Field(None, repr=False, description="default a secret kept under state_dir")
    # The persistent MQTT session is named by this id: a restarted gateway takes its unacked messages back.
    mqtt_client_id: str = Field("safewatch-gateway-1", description="unique per gateway process, stable across restarts")
    mqtt_share_group: str = Field("safewatch", description="shared-subscription group of all gateways")
    mqtt_batch: int = Field(2000, gt=0, description="most MQTT messages forwarded to Kafka in one batch")
    mqtt_max_queued: int = Field(1_000_000, gt=0, description="QoS 1 messages mosquitto holds per offline session")
    mqtt_session_expiry_hours: int = Field(
        24, gt=0, description="how long mosquitto keeps an offline gateway session and its queued messages"
    )

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers."""
        return self.broker_url or f"{self.broker_host}:{self.broker_port}"

    def topic(self, name: str) -> str:
        """A topic's full name with the configured prefix."""
        return self.topic_prefix + name

    @property
    def influx(self) -> str:
        """Base URL of the InfluxDB v1 HTTP API."""
        return self.influx_url or f"http://{self.influx_host}:{self.influx_port}"

    @property
    def spool_dir(self) -> Path:
        """Where InfluxDB points wait while InfluxDB is unreachable."""
        return self.influx_spool_dir or self.state_dir / "spool"

    @property
    def alerts_db_path(self) -> Path:
        """Where the alert service keeps its tasks."""
        return self.alerts_db or self.state_dir / "alerts.sqlite3"

    @property
    def alerts_store(self) -> Path | str:
        """The task store to open: the PostgreSQL URL when one is set, else the SQLite file."""
        return self.alerts_db_url or self.alerts_db_path

    @property
    def history_db_path(self) -> Path:
        """Where accident records and the data-access audit log are kept."""
        return self.history_db or self.state_dir / "history.sqlite3"

    @property
    def ingest_db_path(self) -> Path:
        """Where a pre-Kafka gateway kept its enterprise tokens (migrated to the topic on first use)."""
        return self.ingest_db or self.state_dir / "ingest.sqlite3"

    @property
    def ingest_instance_name(self) -> str:
        """This gateway's tag in feed points: distinct per gateway, so their counts add up, not overwrite."""
        return self.ingest_instance or f"{socket.gethostname()}:{self.ingest_port}"

    @property
    def mosquitto_dir(self) -> Path:
        """Config, password file, ACL and persistence of the embedded mosquitto."""
        return self.state_dir.expanduser().resolve() / "mosquitto"

    @property
    def alerts_api(self) -> str:
        """Base URL of the alert service's HTTP API."""
        return f"http://{self.alerts_host}:{self.alerts_port}"


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
