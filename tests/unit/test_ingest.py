"""The ingest gateway's pure parts: splitting bodies, checking items, the rate limit, the feed, token hashes."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.feed import Feed, Seen, report
from ingest.feed_store import feed_lines
from ingest.intake import check, split_body
from ingest.limits import RateLimiter
from ingest.mqtt import parse_topic
from ingest.tokens import EnterpriseToken, TokenTable, hash_token, mosquitto_hash, new_token, revoked
from sensors.registry import load_registry

REG = load_registry()
ENT, SITE, SENSOR = "913205828486022959", "hz-zjg-tank01", "hz-zjg-tank01-t101-gas01"
OTHER_SITE = "mn-jn-tailings01"
NOW = 1_764_740_000_000


SITE_SENSORS = {site: frozenset(s.id for s in REG.sensors_of_site(site)) for site in REG.sites}


def run(obj: object, enterprise: str = ENT, topic_site: str | None = None, lookups: bool = False):
    """check() as a test calls it; `lookups`: with the per-site sensor sets the gateway builds once."""
    raw = orjson.dumps(obj)
    return check(
        0,
        raw,
        obj,
        enterprise_id=enterprise,
        registry=REG,
        now_ms=NOW,
        future_ms=30_000,
        topic_site=topic_site,
        site_sensors=SITE_SENSORS if lookups else None,
    )


def frame(**over: object) -> dict:
    return {"site_id": SITE, "ts": NOW, "readings": [{"sensor_id": SENSOR, "value": 1.0}], **over}


def test_split_body_forms() -> None:
    one = orjson.dumps(frame())
    assert split_body(one) == [(one, None)]  # one object: left to `check`, which decodes it once
    pretty = orjson.dumps(frame(), option=orjson.OPT_INDENT_2)
    assert split_body(pretty) == [(pretty, frame())]  # one object over several lines is not NDJSON
    assert [x for _, x in split_body(b"[" + one + b"," + one + b"]")] == [frame(), frame()]
    lines = split_body(one + b"\r\n\n" + b"{bad \n", ndjson=True)
    assert lines == [(one, None), (b"{bad ", None)]  # each line's bytes as sent, blank lines skipped
    assert split_body(one + b"\n" + one) == [(one, None), (one, None)]  # NDJSON without saying so
    assert split_body(b"{not json") == [(b"{not json", None)]


def test_accepted_item_goes_to_its_sector_topic() -> None:
    out = run(frame(gateway="gw-1"))
    assert (out.status, out.topic, out.site_id, out.sensors, out.gateway) == (
        "accepted",
        "telemetry.hazchem",
        SITE,
        [SENSOR],
        "gw-1",
    )


@pytest.mark.parametrize(
    ("obj", "reason", "field"),
    [
        ([1], "malformed_message", "<message>"),
        ({"ts": NOW}, "invalid_field", "site_id"),
        (frame(site_id="nope"), "unknown_site", "site_id"),
        (frame(site_id=OTHER_SITE), "not_authorised", "site_id"),
        (frame(ts=NOW // 1000), "ts_in_seconds", "ts"),
        (frame(ts=NOW + 31_000), "future", "ts"),
        (frame(ts=NOW * 1000), "future", "ts"),
        (frame(readings=[{"sensor_id": SENSOR, "value": float("nan")}]), "invalid_field", "readings.0.value"),
        (frame(readings=[]), "invalid_field", "readings"),
        (frame(extra=1), "invalid_field", "extra"),
        (
            frame(readings=[{"sensor_id": "mn-jn-tailings01-pond-level01", "value": 1.0}]),
            "unknown_sensor",
            "readings.0.sensor_id",
        ),
        ({"site_id": SITE, "sensor_id": "x", "ts": NOW, "value": 1.0}, "unknown_sensor", "sensor_id"),
    ],
)
@pytest.mark.parametrize("lookups", [False, True])
def test_refusals_name_reason_and_field(obj: object, reason: str, field: str, lookups: bool) -> None:
    out = run(obj, lookups=lookups)
    assert (out.status, out.reason, out.field) == ("refused", reason, field)
    assert out.as_result()["detail"].startswith(field) or field == "<message>"


def test_the_site_sensor_sets_name_the_first_stranger() -> None:
    stranger = "mn-jn-tailings01-pond-level01"
    readings = [{"sensor_id": SENSOR, "value": 1.0}, {"sensor_id": stranger, "value": 1.0}]
    out = run(frame(readings=readings), lookups=True)
    assert (out.reason, out.field) == ("unknown_sensor", "readings.1.sensor_id") and stranger in out.detail
    assert run(frame(), lookups=True).status == "accepted"


def test_seconds_and_microseconds_say_so() -> None:
    assert "e.g. 1764740000000" in run(frame(ts=NOW // 1000)).detail
    assert "microseconds" in run(frame(ts=NOW * 1000)).detail
    assert run(frame(ts=NOW + 29_000)).status == "accepted"  # within the tolerance


def test_ownership_is_checked_before_the_rest() -> None:
    # someone else's site with a broken value is not_authorised, not invalid_field: it is counted as an intrusion
    out = run(frame(site_id=OTHER_SITE, ts=5))
    assert out.reason == "not_authorised"


def test_mqtt_topic_site_must_match() -> None:
    assert run(frame(), topic_site="hz-zjg-jetty01").reason == "topic_mismatch"
    assert run(frame(), topic_site=SITE).status == "accepted"
    assert parse_topic(f"safewatch/{ENT}/{SITE}/telemetry") == (ENT, SITE)
    assert parse_topic(f"safewatch/{ENT}/{SITE}/other") is None
    assert parse_topic("safewatch//x/telemetry") is None


def test_rate_limiter() -> None:
    lim = RateLimiter(rate=10, burst_s=2)  # 20 at once
    assert lim.take("a", 15, 0.0) == 0.0
    assert lim.take("a", 10, 0.0) == pytest.approx(0.5)  # 5 left, 5 more needed at 10/s
    assert lim.take("b", 20, 0.0) == 0.0  # per enterprise
    assert lim.take("a", 10, 0.5) == 0.0
    assert lim.take("c", 1000, 0.0) == 0.0  # larger than the bucket: passes on a full one
    assert lim.take("c", 1, 0.0) > 0


def test_feed_joins_stored_and_unflushed_counts_and_tells_silence() -> None:
    feed = Feed()
    ok, bad = run(frame()), run(frame(site_id=OTHER_SITE))
    feed.record(ENT, [ok, bad], NOW, "http")
    feed.record("other", [bad], NOW, "http")  # another enterprise's counts stay out
    stored = Seen(last_day=Counter({"not_authorised": 2}), last_hour=Counter({"not_authorised": 1}))
    stored.examples["not_authorised"] = [
        {"at": NOW - 5, "via": "mqtt:t", "field": "site_id", "detail": "d", "input": "x"}
    ]
    stored.merge(feed.local(ENT))
    r = report(ENT, REG, stored, NOW + 1000, 3, "test")
    assert r["last_hour"] == {"not_authorised": 2, "accepted": 1, "readings": 1}
    assert r["last_day"] == {"accepted": 1, "readings": 1, "not_authorised": 3}
    assert [x["via"] for x in r["refused_examples"]["not_authorised"]] == ["http", "mqtt:t"]  # newest first
    assert SENSOR not in r["silent_sensors"]
    assert SENSOR in report(ENT, REG, stored, NOW + 2 * 3_600_000, 3, "test")["silent_sensors"]


def test_a_failed_flush_is_kept_for_the_next() -> None:
    feed = Feed()
    feed.record(ENT, [run(frame())], NOW, "http")
    lines = feed_lines(feed.take(), REG, "gw a", NOW)
    assert feed.local(ENT).last_day["accepted"] == 1  # counted while the write is under way
    feed.record(ENT, [run(frame())], NOW + 1, "http")
    feed.done(ok=False)
    assert feed.local(ENT).last_day["accepted"] == 2 and feed.flushing is None
    assert f"ingest_count,enterprise_id={ENT},ingest=gw\\ a,result=accepted count=1i {NOW}" in lines
    assert any(x.startswith(f"ingest_sensor,enterprise_id={ENT},sensor_id={SENSOR},site_id={SITE} ts=") for x in lines)
    feed.take()
    feed.done(ok=True)
    assert feed.local(ENT).last_day == Counter()


def test_refusal_examples_get_distinct_times_per_flush() -> None:
    feed = Feed()
    bad = run(frame(site_id=OTHER_SITE))
    feed.record(ENT, [bad, bad, bad], NOW, "http")
    lines = [x for x in feed_lines(feed.take(), REG, "gw", NOW) if x.startswith("ingest_refusal")]
    assert [int(x.rsplit(" ", 1)[1]) for x in lines] == [NOW, NOW + 1, NOW + 2]


def test_mosquitto_hash_is_pbkdf2_sha512() -> None:
    salt = b"0123456789ab"
    h = mosquitto_hash("secret", salt)
    _, kind, iterations, salt64, digest64 = h.split("$")
    assert (kind, iterations) == ("7", "101") and base64.b64decode(salt64) == salt
    assert base64.b64decode(digest64) == hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)


def test_token_table_keeps_only_hashes_and_follows_revocation() -> None:
    table = TokenTable()
    tok, secret = new_token(ENT, "gw")
    assert table.apply(tok) and not table.apply(tok)
    assert table.verify(secret) == tok and table.verify(secret + "x") is None
    data = tok.to_json()
    assert secret.encode() not in data and hash_token(secret).encode() in data
    assert EnterpriseToken.from_json(data) == tok
    assert table.apply(revoked(tok))
    assert table.verify(secret) is None and table.list(live_only=True) == [] and len(table.list()) == 1
    with pytest.raises(ValueError, match="name"):
        new_token(ENT, " ")


@given(st.binary(max_size=300))
def test_any_bytes_get_an_outcome(raw: bytes) -> None:
    for i, (item, obj) in enumerate(split_body(raw)):
        out = check(i, item, obj, enterprise_id=ENT, registry=REG, now_ms=NOW, future_ms=30_000)
        assert out.status in ("accepted", "refused") and (out.status == "accepted" or out.reason)


def test_feed_page_escapes_what_operators_sent() -> None:
    from ingest.page import feed_page

    feed = Feed()
    hostile = b'{"site_id": "<script>alert(1)</script>", "ts": 1}'
    out = check(0, hostile, None, enterprise_id=ENT, registry=REG, now_ms=NOW, future_ms=30_000)
    feed.record(ENT, [out], NOW, "http")
    page = feed_page(report(ENT, REG, feed.local(ENT), NOW, 3, "test"))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "unknown_site" in page
