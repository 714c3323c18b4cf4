"""Two gateway processes behind one (imagined) load balancer: shared tokens (Kafka), shared feed (InfluxDB)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from config.topics import TOKENS_TOPIC
from ingest.token_topic import publish
from ingest.tokens import new_token

from .ingest_helpers import (
    ENT_A,
    ENT_B,
    REVOKED_WITHIN_S,
    SENSOR_A,
    SENSOR_B,
    SITE_B,
    Gateway,
    frame,
    free_port,
    gateway_settings,
    issue_token,
    now_ms,
    refused_within,
    retire_session,
    safewatch_cli,
)
from .test_history_schema import TYPES, _keys, documented

GATEWAY_MEASUREMENTS = ("ingest_count", "ingest_sensor", "ingest_refusal", "ingest_skew")


def start(settings: Settings, log: Path) -> Gateway:
    gateway = Gateway(settings, log)
    deadline = time.monotonic() + 15  # its MQTT subscription is in place once it logs it
    while "subscribed" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return gateway


@pytest.fixture(scope="module")
def pair(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway, Path]]:
    """Gateways A and B: one deployment (topics, InfluxDB), own ports and MQTT client ids, one share group."""
    group = f"sh{uuid.uuid4().hex[:6]}"
    shared = gateway_settings(stack, mqtt_share_group=group, feed_flush_s=1.0)
    logs = tmp_path_factory.mktemp("pair")
    a_settings, b_settings = (
        shared.model_copy(update={"ingest_port": free_port(), "mqtt_client_id": f"{group}-{name}"}) for name in "ab"
    )
    a = start(a_settings, logs / "a.log")
    try:
        b = start(b_settings, logs / "b.log")
    except BaseException:
        a.stop()
        raise
    gateways = [a, b]
    yield gateways[0], gateways[1], logs
    for g in gateways:
        g.stop()
        retire_session(g.settings)


def comparable(feed: dict) -> dict:
    """What two gateways must agree on (not `generated_at`)."""
    sensors = {s["sensor_id"]: (s["last_ts"], s["silent"]) for site in feed["sites"] for s in site["sensors"]}
    keep = ("last_hour", "last_day", "refused_examples", "gateway_clock_skew_ms")
    return {"sensors": sensors, **{k: feed[k] for k in keep}}


def agreed(a: Gateway, b: Gateway, token: str, check, timeout: float = 10.0) -> dict:
    """The feed once A and B give the same answer and `check(feed)` holds (flushes are every second)."""
    deadline = time.monotonic() + timeout
    while True:
        fa, fb = a.feed(token).json(), b.feed(token).json()
        if comparable(fa) == comparable(fb) and check(fa):
            return fa
        assert time.monotonic() < deadline, f"A and B disagree:\n{comparable(fa)}\n{comparable(fb)}"
        time.sleep(0.2)


def test_a_token_issued_once_works_on_both_and_a_revoked_one_on_neither(pair) -> None:
    a, b, _ = pair
    token_id, secret = issue_token(a.settings, ENT_B, "both gateways")  # ENT_A's feed is the feed test's
    body = orjson.dumps(frame(SITE_B, SENSOR_B))
    assert a.post(secret, body).status_code == 202  # at once: an unknown token waits for the topic to catch up
    assert b.post(secret, body).status_code == 202
    passwd = a.settings.mosquitto_dir / "passwd"
    assert f"{token_id}:" in passwd.read_text()

    done = safewatch_cli(a.settings, "enterprise", "token", "revoke", token_id)
    assert done.returncode == 0, done.stderr
    revoked_at = time.monotonic()
    assert refused_within(a, secret, REVOKED_WITHIN_S, body)
    assert refused_within(b, secret, max(0.0, REVOKED_WITHIN_S - (time.monotonic() - revoked_at)), body)
    assert f"{token_id}:" not in passwd.read_text()


def test_each_gateway_rewrites_mosquittos_files_on_a_change_it_sees(pair) -> None:
    a, _, _ = pair
    # Issued elsewhere (a host whose CLI does not share mosquitto's files): only the gateways write them here.
    token, _secret = new_token(ENT_A, "issued on another host")
    asyncio.run(publish(a.settings, [token]))
    passwd = a.settings.mosquitto_dir / "passwd"
    deadline = time.monotonic() + REVOKED_WITHIN_S
    while f"{token.token_id}:" not in passwd.read_text():
        assert time.monotonic() < deadline, "no gateway wrote the new account"
        time.sleep(0.05)
    assert f"user {token.token_id}" in (a.settings.mosquitto_dir / "acl").read_text()  # written before passwd


def test_the_feed_is_the_same_from_either_gateway_and_survives_restarts(pair) -> None:
    a, b, logs = pair
    _, token = issue_token(a.settings, ENT_A, "feed")
    ts = now_ms() - 1500
    assert a.post_json(token, [frame(ts=ts, gateway="plant-gw-1"), frame(ts=ts - 10)]).json()["accepted"] == 2
    seconds = b.post_json(token, [frame(ts=ts // 1000), frame(site="mn-jn-tailings01")]).json()
    assert seconds["refused"] == 2

    feed = agreed(a, b, token, lambda f: f["last_day"].get("ts_in_seconds") == 1)
    assert (
        feed["last_hour"] == feed["last_day"] == {"accepted": 2, "readings": 2, "ts_in_seconds": 1, "not_authorised": 1}
    )
    sensors = {s["sensor_id"]: s for site in feed["sites"] for s in site["sensors"]}
    assert sensors[SENSOR_A]["last_ts"] == ts and not sensors[SENSOR_A]["silent"]
    assert feed["refused_examples"]["ts_in_seconds"][0]["field"] == "ts"
    assert str(ts // 1000) in feed["refused_examples"]["ts_in_seconds"][0]["input"]
    assert feed["gateway_clock_skew_ms"]["plant-gw-1"]["skew_ms"] >= 1500

    # B killed (its counts were flushed), A stopped right after a refusal (its last flush on the way out)
    b.kill()
    assert a.post_json(token, frame(ts=ts // 1000)).status_code == 202
    a.stop()
    b2 = start(b.settings, logs / "b2.log")
    a2 = start(a.settings, logs / "a2.log")
    pair[0].proc, pair[1].proc = a2.proc, b2.proc  # the fixture stops whatever runs now
    after = agreed(a2, b2, token, lambda f: True)
    assert after["last_day"] == {**feed["last_day"], "ts_in_seconds": 2}
    last_ts = {k: v[0] for k, v in comparable(feed)["sensors"].items()}
    assert {k: v[0] for k, v in comparable(after)["sensors"].items()} == last_ts


def test_the_gateway_measurements_match_the_schema_doc(pair) -> None:
    s = pair[0].settings
    doc = documented()
    for m in GATEWAY_MEASUREMENTS:
        tags = set(_keys(s, f'SHOW TAG KEYS FROM "{m}"'))
        fields = _keys(s, f'SHOW FIELD KEYS FROM "{m}"')
        assert tags, f"the gateways wrote no {m}"
        want_tags = {n for n, (k, _, _) in doc[m].items() if k == "tag"}
        want_fields = {n: t for n, (k, t, _) in doc[m].items() if k == "field"}
        always = {n for n, (_, _, w) in doc[m].items() if w == "always"}
        assert tags <= want_tags and set(fields) <= set(want_fields), f"{m}: undocumented tags or fields"
        assert always <= tags | set(fields), f"{m}: documented always, never written: {always - tags - set(fields)}"
        for name, ftype in fields.items():
            assert TYPES[want_fields[name]] == ftype, f"{m}.{name} is {ftype}, documented {want_fields[name]}"


LEGACY_SCHEMA = """CREATE TABLE enterprise_tokens (token_id TEXT PRIMARY KEY, enterprise_id TEXT NOT NULL,
name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, mqtt_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
revoked_at INTEGER)"""


def test_tokens_of_an_old_sqlite_file_move_to_the_topic(stack: Settings, tmp_path: Path) -> None:
    legacy = tmp_path / "ingest.sqlite3"  # as a gateway from before the tokens topic left it
    live, secret = new_token(ENT_A, "old gateway")
    gone, gone_secret = new_token(ENT_A, "old, revoked")
    db = sqlite3.connect(legacy)
    db.execute(LEGACY_SCHEMA)
    for t, revoked_at in ((live, None), (gone, now_ms())):
        row = (t.token_id, t.enterprise_id, t.name, t.token_hash, t.mqtt_hash, t.created_at, revoked_at)
        db.execute("INSERT INTO enterprise_tokens VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    db.commit()
    db.close()
    settings = gateway_settings(stack, ingest_db=legacy)
    gateway = Gateway(settings, tmp_path / "gateway.log", "--no-mqtt")
    try:
        body = orjson.dumps(frame())
        assert gateway.post(secret, body).status_code == 202
        assert gateway.post(gone_secret, body).status_code == 401
        assert not legacy.exists() and legacy.with_name("ingest.sqlite3.migrated").exists()
        listed = safewatch_cli(settings, "enterprise", "token", "list").stdout
        assert live.token_id in listed and gone.token_id in listed
    finally:
        gateway.stop()


@pytest.mark.asyncio
async def test_the_tokens_topic_is_compacted(pair) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    settings = pair[0].settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, settings.topic(TOKENS_TOPIC))
        configs = await admin.describe_configs([resource])
    finally:
        await admin.close()
    assert {e[0]: e[1] for e in configs[0].resources[0][4]}.get("cleanup.policy") == "compact"
