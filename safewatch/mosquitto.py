"""The embedded MQTT broker (Debian's mosquitto 2.0): its config, password file and ACL.

One account per live enterprise token (user = token id, password = the token) that may publish
only under `safewatch/<credit code>/+/telemetry`; the gateway's own account may only read
those topics. The files are rewritten by whoever issues or revokes a token, and by every gateway
when it sees a change on the tokens topic (so a gateway beside mosquitto keeps them right); a
running embedded mosquitto is told to reload them (SIGHUP).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from pathlib import Path

from config.settings import Settings
from ingest.mqtt import BATCHES_IN_FLIGHT, TOPIC_FILTER, TOPIC_ROOT
from ingest.tokens import EnterpriseToken, TokenTable, mosquitto_hash


def enterprise_topics(enterprise_id: str) -> str:
    """The topic filter one enterprise may publish to."""
    return f"{TOPIC_ROOT}/{enterprise_id}/+/telemetry"


def gateway_password(settings: Settings) -> str:
    """The gateway's MQTT password: the setting, else a secret made once and kept under state_dir."""
    if settings.mqtt_password:
        return settings.mqtt_password
    path = settings.mosquitto_dir / "gateway.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(secrets.token_urlsafe(24))
        tmp.chmod(0o600)
        # link, not rename: of gateways starting at once on one volume, the first wins and all read its secret
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_text().strip()


def write_auth(settings: Settings, tokens: list[EnterpriseToken]) -> None:
    """Write the password file and the ACL for these live tokens (atomically: mosquitto may reload any time)."""
    passwd = [f"{settings.mqtt_user}:{mosquitto_hash(gateway_password(settings))}"]
    passwd += [f"{t.token_id}:{t.mqtt_hash}" for t in tokens]
    acl = [f"user {settings.mqtt_user}", f"topic read {TOPIC_FILTER}", ""]
    for t in tokens:
        acl += [f"user {t.token_id}", f"topic write {enterprise_topics(t.enterprise_id)}", ""]
    # The ACL first: a reload between the two writes then never finds an account without its topics.
    _write(settings.mosquitto_dir / "acl", "\n".join(acl))
    _write(settings.mosquitto_dir / "passwd", "\n".join(passwd) + "\n")


def write_conf(settings: Settings) -> Path:
    """mosquitto.conf: a loopback listener, no anonymous access, persistent QoS 1 sessions."""
    root = settings.mosquitto_dir
    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `safewatch stack up` on every start; edits are overwritten.",
        f"listener {settings.mqtt_port} {settings.mqtt_host}",
        "allow_anonymous false",
        f"password_file {root / 'passwd'}",
        f"acl_file {root / 'acl'}",
        # Queued QoS 1 messages of an offline gateway session are kept on disk across a broker restart.
        "persistence true",
        f"persistence_location {root / 'data'}/",
        "autosave_interval 5",
        # A session no gateway comes back for (a retired client id) would otherwise collect a copy
        # of every message for ever; a gateway back within the expiry gets its queue.
        f"persistent_client_expiration {settings.mqtt_session_expiry_hours}h",
        # The gateway acknowledges a message only once Kafka has it, so many are in flight at once;
        # mosquitto's defaults (20 in flight, 1,000 queued) would throttle it, then drop messages.
        # In flight: what the gateway's batches hold, so the rest waits in mosquitto (see docs/ingest.md).
        f"max_inflight_messages {settings.mqtt_batch * BATCHES_IN_FLIGHT}",
        f"max_queued_messages {settings.mqtt_max_queued}",
        "max_packet_size 1048576",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # else it drops to user `mosquitto`, who cannot write state_dir
    conf = root / "mosquitto.conf"
    _write(conf, "\n".join(lines) + "\n")
    return conf


def reload(settings: Settings) -> bool:
    """Ask a running embedded mosquitto to reread its password file and ACL; False if none runs."""
    from .stack import MOSQUITTO, running_pid

    pid = running_pid(settings, MOSQUITTO)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
    return True


def write_initial_auth(settings: Settings) -> None:
    """At mosquitto's start: keep the files the CLI and the gateways wrote, else only the gateway's account."""
    if not (settings.mosquitto_dir / "passwd").exists():
        write_auth(settings, [])


def sync_auth(settings: Settings, table: TokenTable) -> None:
    """Rewrite the auth files from the token table and reload mosquitto (after issue/revoke, or a change seen)."""
    write_auth(settings, table.list(live_only=True))
    reload(settings)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # several gateways may rewrite the same file
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
