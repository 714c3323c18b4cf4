"""The ingest gateway's HTTP path against the real broker: tokens, ownership, every refusal, limits, feed."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from config.settings import Settings
from config.topics import DEADLETTER_TOPIC, TOKENS_TOPIC, telemetry_topic
from ingest.tokens import hash_token
from sensors.registry import DEFAULT_REGISTRY

from .ingest_helpers import (
    ENT_A,
    ENT_B,
    REVOKED_WITHIN_S,
    SENSOR_A,
    SENSOR_B,
    SITE_A,
    SITE_B,
    Gateway,
    frame,
    gateway_settings,
    issue_token,
    now_ms,
    read_topic,
    refused_within,
    safewatch_cli,
)


@pytest.fixture(scope="module")
def gw(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str, str]]:
    """A gateway (HTTP only) and a token for each of two enterprises."""
    settings = gateway_settings(stack, feed_silent_periods=2.0)
    _, token_a = issue_token(settings, ENT_A)
    _, token_b = issue_token(settings, ENT_B)
    gateway = Gateway(settings, tmp_path_factory.mktemp("gw") / "gateway.log", "--no-mqtt")
    yield gateway, token_a, token_b
    gateway.stop()


def refused(response) -> list[dict]:
    return [r for r in response.json()["results"] if r["status"] == "refused"]


@pytest.mark.asyncio
async def test_each_enterprise_sends_only_for_its_own_sites(gw) -> None:
    gateway, token_a, token_b = gw
    own_a, own_b = frame(SITE_A, SENSOR_A), frame(SITE_B, SENSOR_B)
    stolen_by_a, stolen_by_b = frame(SITE_B, SENSOR_B, value=7.0), frame(SITE_A, SENSOR_A, value=8.0)

    ra = gateway.post_json(token_a, [own_a, stolen_by_a])
    rb = gateway.post_json(token_b, [stolen_by_b, own_b])
    assert ra.status_code == rb.status_code == 202
    assert ra.json()["results"][0] == {"index": 0, "status": "accepted"}
    assert ra.json()["results"][1] == {
        "index": 1,
        "status": "refused",
        "reason": "not_authorised",
        "field": "site_id",
        "detail": f"site_id: {SITE_B} is not a site of enterprise {ENT_A}",
    }
    assert [r["reason"] for r in refused(rb)] == ["not_authorised"] and rb.json()["accepted"] == 1

    s = gateway.settings
    hazchem = await read_topic(s, telemetry_topic("hazchem", s.topic_prefix), 1)
    mine = await read_topic(s, telemetry_topic("mine", s.topic_prefix), 1)
    assert hazchem == [(SITE_A, own_a)] and mine == [(SITE_B, own_b)]
    dead = await read_topic(s, s.topic(DEADLETTER_TOPIC), 2)
    by_ent = {rec["enterprise_id"]: (key, rec) for key, rec in dead}
    assert set(by_ent) == {ENT_A, ENT_B}
    key, rec = by_ent[ENT_A]
    assert key == SITE_B and rec["reason"] == "not_authorised" and rec["field"] == "site_id"
    assert orjson.loads(rec["raw"]) == stolen_by_a  # the input itself, kept
    # counted per enterprise, each seeing only its own
    assert gateway.feed(token_a).json()["last_day"]["not_authorised"] == 1
    assert gateway.feed(token_b).json()["last_day"]["not_authorised"] == 1


@pytest.mark.asyncio
async def test_every_refusal_reason_names_the_field_and_is_dead_lettered(gw) -> None:
    gateway, token_a, _ = gw
    t = now_ms()
    lines = [
        b'{"site_id": "hz-zjg-tank01", "ts": ',  # cut short
        b'"just a string"',
        orjson.dumps(frame("no-such-site")),
        orjson.dumps(frame(SITE_B, SENSOR_B)),
        orjson.dumps(frame(ts=t // 1000)),
        orjson.dumps(frame(ts=t + 3_600_000)),
        orjson.dumps({"site_id": SITE_A, "ts": t, "readings": [{"sensor_id": SENSOR_A, "value": "high"}]}),
        orjson.dumps(frame(sensor=SENSOR_B)),
        orjson.dumps({"site_id": SITE_A, "sensor_id": SENSOR_A, "ts": t, "value": 2.0}),  # a single reading: fine
    ]
    r = gateway.post(token_a, b"\n".join(lines), **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    got = [(x["index"], x["reason"], x["field"]) for x in refused(r)]
    assert got == [
        (0, "malformed_json", "<message>"),
        (1, "malformed_message", "<message>"),
        (2, "unknown_site", "site_id"),
        (3, "not_authorised", "site_id"),
        (4, "ts_in_seconds", "ts"),
        (5, "future", "ts"),
        (6, "invalid_field", "readings.0.value"),
        (7, "unknown_sensor", "readings.0.sensor_id"),
    ]
    details = {x["reason"]: x["detail"] for x in refused(r)}
    assert "looks like epoch seconds" in details["ts_in_seconds"] and "milliseconds" in details["ts_in_seconds"]
    assert "ahead of the gateway's clock" in details["future"]
    assert r.json()["accepted"] == 1

    s = gateway.settings
    dead = await read_topic(s, s.topic(DEADLETTER_TOPIC), 2 + 8)  # the previous test's two, then these
    ours = {(rec["offset"], rec["reason"]): rec for _, rec in dead if rec["enterprise_id"] == ENT_A}
    for index, reason, field in got:
        rec = ours[index, reason]
        assert rec["topic"] == "http" and rec["field"] == field
        assert rec["raw"].encode() == lines[index]  # the line's own bytes
    assert gateway.feed(token_a).json()["last_day"]["ts_in_seconds"] == 1


def test_tokens_401_and_revocation(gw) -> None:
    gateway, token_a, _ = gw
    body = orjson.dumps(frame())
    missing = gateway.post(None, body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert gateway.post("swe_not-a-token", body).status_code == 401
    assert gateway.feed("swe_not-a-token").status_code == 401

    token_id, secret = issue_token(gateway.settings, ENT_A, "short-lived")
    assert gateway.post(secret, body).status_code == 202
    done = safewatch_cli(gateway.settings, "enterprise", "token", "revoke", token_id)
    assert done.returncode == 0, done.stderr
    assert refused_within(gateway, secret, REVOKED_WITHIN_S)  # no restart
    listed = safewatch_cli(gateway.settings, "enterprise", "token", "list").stdout
    row = next(line for line in listed.splitlines() if line.startswith(token_id))
    assert row.split("\t")[-1].isdigit()  # revoked_ms set
    assert secret not in listed and token_a not in listed
    stored = asyncio.run(read_topic(gateway.settings, gateway.settings.topic(TOKENS_TOPIC), 1_000, timeout=3))
    assert secret not in str(stored) and hash_token(secret) in str(stored)  # hashed at rest


def test_unknown_enterprise_for_token_issue_is_refused(gw) -> None:
    gateway, _, _ = gw
    done = safewatch_cli(gateway.settings, "enterprise", "token", "issue", "91320500MA00000000", "--name", "x")
    assert done.returncode != 0 and "no enterprise" in done.stderr


def test_feed_shows_a_silenced_sensor_and_only_its_own_sites(gw) -> None:
    gateway, token_a, token_b = gw
    assert gateway.post_json(token_a, frame(SITE_A, SENSOR_A)).status_code == 202
    feed = gateway.feed(token_a).json()
    sensors = {s["sensor_id"]: s for site in feed["sites"] for s in site["sensors"]}
    assert not sensors[SENSOR_A]["silent"] and sensors[SENSOR_A]["last_ts"] is not None
    assert {site["site_id"] for site in feed["sites"]} == {"hz-zjg-tank01", "hz-zjg-jetty01"}
    assert SITE_B not in str(feed["sites"])
    assert feed["last_hour"]["accepted"] >= 1 and feed["last_hour"]["readings"] >= 1
    assert "not_authorised" in feed["refused_examples"]

    time.sleep(4.5)  # period 2 s, silent after two periods (feed_silent_periods=2)
    feed = gateway.feed(token_a).json()
    sensors = {s["sensor_id"]: s for site in feed["sites"] for s in site["sensors"]}
    assert sensors[SENSOR_A]["silent"] and SENSOR_A in feed["silent_sensors"]
    # the HTML page says the same
    html = httpx.get(f"{gateway.url}/v1/feed.html", headers={"Authorization": f"Bearer {token_a}"}).text
    assert SENSOR_A in html and "<b>silent</b>" in html


@pytest.fixture(scope="module")
def tight(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str, str]]:
    """A gateway with small limits, and a registry without enterprise B (its token then gets 403)."""
    data = yaml.safe_load(DEFAULT_REGISTRY.read_text(encoding="utf-8"))
    data["enterprises"] = [e for e in data["enterprises"] if str(e["id"]) != ENT_B]
    registry: Path = tmp_path_factory.mktemp("reg") / "registry.yaml"
    registry.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    settings = gateway_settings(
        stack,
        ingest_max_body_bytes=8192,
        ingest_max_inflated_bytes=32768,
        ingest_max_items=50,
        # 100 at once, refilled at 1/s: a loaded machine's slow requests cannot refill it between posts
        ingest_rate_per_s=1.0,
        ingest_burst_s=100.0,
    )
    _, token_a = issue_token(settings, ENT_A)
    _, token_b = issue_token(settings, ENT_B)
    gateway = Gateway(
        settings.model_copy(update={"registry": registry}), tmp_path_factory.mktemp("gw") / "tight.log", "--no-mqtt"
    )
    yield gateway, token_a, token_b
    gateway.stop()


def test_http_limits(tight) -> None:
    gateway, token_a, token_b = tight
    one = orjson.dumps(frame())
    big = b"[" + b",".join([one] * 100) + b"]"
    assert len(big) > 8192
    r = gateway.post(token_a, big)
    assert r.status_code == 413 and "8,192" in r.json()["detail"]

    bomb = gzip.compress(b"[" + b",".join([one] * 400) + b"]")
    assert len(bomb) < 8192
    r = gateway.post(token_a, bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "inflates" in r.json()["detail"]

    r = gateway.post(token_a, gzip.compress(one), **{"Content-Encoding": "gzip"})
    assert r.status_code == 202 and r.json()["accepted"] == 1
    assert gateway.post(token_a, b"not gzip", **{"Content-Encoding": "gzip"}).status_code == 400
    assert gateway.post(token_a, one, **{"Content-Encoding": "br"}).status_code == 415

    fifty_one = b"\n".join([orjson.dumps({"site_id": SITE_A, "ts": 1, "value": 1})] * 51)
    r = gateway.post(token_a, fifty_one, **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 413 and "at most 50" in r.json()["detail"]

    # a bucket of 100 (1 used above): 40 + 40 pass, the next 40 are over
    forty = b"\n".join([one] * 40)
    codes = [gateway.post(token_a, forty, **{"Content-Type": "application/x-ndjson"}) for _ in range(3)]
    assert [c.status_code for c in codes] == [202, 202, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1

    r = gateway.post(token_b, one)  # a valid token of an enterprise the registry no longer has
    assert r.status_code == 403 and ENT_B in r.json()["detail"]


def test_https_with_a_certificate(stack: Settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = gateway_settings(stack, ingest_tls_cert=cert, ingest_tls_key=key)
    _, token = issue_token(settings, ENT_A)
    trust = ssl.create_default_context(cafile=str(cert))
    gateway = Gateway(settings, tmp_path / "gateway.log", "--no-mqtt", scheme="https", verify=trust)
    try:
        r = httpx.post(
            f"{gateway.url}/v1/telemetry",
            content=orjson.dumps(frame()),
            headers={"Authorization": f"Bearer {token}"},
            verify=trust,
        )
        assert gateway.url.startswith("https://") and r.status_code == 202 and r.json()["accepted"] == 1
    finally:
        gateway.stop()
