"""The dead-letter record: always serialisable, bounded in size, and it still says what the input was."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sensors.deadletter import RAW_COPY_MAX, RawMessage, deadletter_record

MiB = 1024 * 1024
KiB = 1024
WHERE = ("it-x.telemetry.hazchem", 3, 123_456)
FIELDS = {"reason", "detail", "topic", "partition", "offset", "site_id", "received_at"}


def message(value: bytes | None, key: bytes | None = b"hz-zjg-tank01") -> RawMessage:
    return RawMessage(*WHERE, key, value)


def size(rec: dict) -> int:
    return len(orjson.dumps(rec))


def assert_source(rec: dict, reason: str = "r") -> None:
    assert set(rec) >= FIELDS
    assert (rec["topic"], rec["partition"], rec["offset"]) == WHERE
    assert rec["reason"] == reason


def raw_copy(rec: dict) -> bytes:
    """The bytes of the input the record carries (its first RAW_COPY_MAX when cut)."""
    if "raw" in rec:
        return rec["raw"].encode()
    return base64.b64decode(rec["raw_b64"])


def nested(depth: int, leaf: object = 1) -> dict:
    obj: object = leaf
    for _ in range(depth):
        obj = {"a": obj}
    return obj  # type: ignore[return-value]


def depth_of(obj: object) -> int:
    n = 0
    while isinstance(obj, dict):
        obj, n = obj["a"], n + 1
    return n


def nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# --- examples ---------------------------------------------------------------------------------


def test_a_1_mib_input_is_cut_and_its_size_and_hash_kept():
    value = (b'{"site_id":"hz-zjg-tank01","ts":1,"blob":"' + b"x" * MiB)[:MiB]
    rec = deadletter_record("malformed_json", "unexpected end of input", message(value))
    assert size(rec) < MiB
    assert rec["raw_truncated"] is True
    assert rec["raw_bytes"] == len(value) == MiB
    assert rec["raw_sha256"] == hashlib.sha256(value).hexdigest()
    assert raw_copy(rec) == value[:RAW_COPY_MAX]
    assert_source(rec, "malformed_json")


def test_a_1_mib_payload_falls_back_to_the_cut_raw_copy():
    payload = {"sensor_id": "hz-zjg-tank01-t101-gas01", "value": "v" * MiB}
    value = orjson.dumps({"site_id": "hz-zjg-tank01", "ts": 1, "readings": [payload]})
    rec = deadletter_record(
        "invalid_field",
        "readings.0.value: Input should be a valid number",
        message(value),
        payload=payload,
        site_id="hz-zjg-tank01",
    )
    assert "reading" not in rec
    assert size(rec) < MiB and rec["raw_truncated"] is True and rec["raw_bytes"] == len(value)
    assert rec["raw_sha256"] == hashlib.sha256(value).hexdigest()
    assert rec["site_id"] == "hz-zjg-tank01"


def test_a_small_input_is_kept_whole_without_hash():
    value = b'{"site_id":"s","ts":1}'
    rec = deadletter_record("invalid_field", "d", message(value))
    assert rec["raw"] == value.decode() and rec["raw_bytes"] == len(value)
    assert "raw_truncated" not in rec and "raw_sha256" not in rec
    at_limit = deadletter_record("malformed_json", "d", message(b"y" * RAW_COPY_MAX))
    assert "raw_truncated" not in at_limit and len(at_limit["raw"]) == RAW_COPY_MAX


def test_a_small_payload_is_kept_as_the_reading():
    payload = {"site_id": "s", "ts": 1, "sensor_id": "x", "value": 1.5, "quality": "good"}
    rec = deadletter_record("unknown_sensor", "d", message(orjson.dumps(payload)), payload=payload, site_id="s")
    assert rec["reading"] == payload and "raw" not in rec and "raw_b64" not in rec
    assert rec["site_id"] == "s"
    assert_source(rec, "unknown_sensor")


def test_a_payload_nested_1000_levels_does_not_raise_and_falls_back_to_the_raw_copy():
    value = nested_json(1000)
    assert depth_of(orjson.loads(value)) == 1000  # what the worker decodes (orjson reads up to 1024 levels)
    rec = deadletter_record("invalid_field", "a: Extra inputs are not permitted", message(value), payload=nested(1000))
    assert "reading" not in rec
    assert rec["raw"] == value.decode() and rec["raw_bytes"] == len(value)
    assert orjson.loads(orjson.dumps(rec))["raw"] == value.decode()
    assert_source(rec, "invalid_field")


@pytest.mark.parametrize("depth", [1, 200, 253, 255, 300, 1000, 5000])
def test_deep_payloads_serialise(depth):
    rec = deadletter_record("invalid_field", "d", message(b"{}"), payload=nested(depth))
    out = orjson.loads(orjson.dumps(rec))
    if depth < ORJSON_EDGE:  # one level deeper inside the record, still within orjson's 255: kept whole
        assert depth_of(out["reading"]) == depth and "raw" not in out
    else:  # too deep to write: the raw copy instead
        assert "reading" not in out and out["raw"] == "{}"


# orjson writes at most 255 levels, and the record puts a payload one level deeper than it is:
# a payload of 254 levels must still give a record that serialises (it once did not, and the
# worker exited at that message on every restart).
ORJSON_EDGE = 254


def test_a_payload_at_orjson_depth_limit_still_serialises_in_its_record():
    item = {"sensor_id": "hz-zjg-tank01-t101-gas01", "value": 1.0, "x": nested(ORJSON_EDGE - 1)}
    rec = deadletter_record(
        "invalid_field", "readings.0.x: Extra inputs are not permitted", message(b"{}"), payload=item
    )
    orjson.dumps(rec)


def test_non_utf8_bytes_go_to_raw_b64():
    value = b'\xff\xfe{"site_id":"s"\x80\xc3'
    rec = deadletter_record("malformed_json", "str is not valid UTF-8", message(value))
    assert "raw" not in rec
    assert base64.b64decode(rec["raw_b64"]) == value and rec["raw_bytes"] == len(value)
    assert_source(rec, "malformed_json")


def test_a_cut_non_utf8_input_keeps_its_first_bytes_as_b64():
    value = b"\xff" * (2 * RAW_COPY_MAX)
    rec = deadletter_record("malformed_json", "d", message(value))
    assert base64.b64decode(rec["raw_b64"]) == value[:RAW_COPY_MAX]
    assert rec["raw_truncated"] is True and rec["raw_sha256"] == hashlib.sha256(value).hexdigest()


def test_a_message_without_value_still_names_its_source():
    rec = deadletter_record("empty_message", "message has no value", message(None, key=None))
    assert_source(rec, "empty_message")
    assert not {"raw", "raw_b64", "raw_bytes", "reading"} & set(rec)
    orjson.dumps(rec)


def test_detail_is_cut_and_a_non_string_site_is_dropped():
    rec = deadletter_record("r", "d" * 10_000, message(b"x"), site_id=12)  # type: ignore[arg-type]
    assert len(rec["detail"]) == 2000 and rec["site_id"] is None


def test_payloads_orjson_cannot_write_fall_back_to_the_raw_copy():
    for payload in ({"n": 2**64}, {1: "int key"}, {"s": {1, 2}}):
        rec = deadletter_record("invalid_field", "d", message(b'{"n":1}'), payload=payload)  # type: ignore[arg-type]
        assert "reading" not in rec and rec["raw"] == '{"n":1}'
        orjson.dumps(rec)


def test_a_huge_site_id_does_not_make_the_record_outgrow_the_broker_limit():
    site = "s" * MiB  # `{"site_id": <1 MiB>, "ts": 1}`: Ident refuses it, DecodeError keeps it as site_id
    value = orjson.dumps({"site_id": site, "ts": 1})[: MiB - 100]
    rec = deadletter_record(
        "invalid_field", "site_id: String should have at most 128 characters", message(value), site_id=site
    )
    assert size(rec) < MiB


# --- properties -------------------------------------------------------------------------------

# Binary values small and large: a short pattern repeated past RAW_COPY_MAX, or plain bytes.
values = st.one_of(
    st.none(),
    st.binary(max_size=512),
    st.builds(lambda part, n: (part * n)[: 2 * MiB], st.binary(min_size=1, max_size=64), st.integers(1, 200_000)),
    st.builds(
        lambda text, n: (text.encode() * n)[: 2 * MiB], st.text(min_size=1, max_size=16), st.integers(1, 100_000)
    ),
)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=64),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 100_000)),
)
json_ish = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=16), inner, max_size=5)),
    max_leaves=40,
)
objects = st.dictionaries(st.text(max_size=16), json_ish, max_size=6)
# depth ORJSON_EDGE has its own test above
depths = st.integers(1, 3000).filter(lambda d: d != ORJSON_EDGE)
payloads = st.one_of(st.none(), objects, depths.map(nested))
reasons = st.sampled_from(["malformed_json", "malformed_message", "invalid_field", "unknown_sensor", "future", "late"])
sites = st.one_of(st.none(), st.text(min_size=1, max_size=128))  # the contract's Ident: at most 128 characters
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@PROPERTY
@given(
    reason=reasons,
    detail=st.text(max_size=3000),
    value=values,
    payload=payloads,
    site=sites,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
)
def test_any_input_gives_a_serialisable_record_under_the_broker_limit_naming_its_source(
    reason, detail, value, payload, site, partition, offset
):
    m = RawMessage("it-x.telemetry.mine", partition, offset, None, value)
    rec = deadletter_record(reason, detail, m, payload=payload, site_id=site)
    out = orjson.dumps(rec)  # never raises
    assert len(out) < MiB
    assert (rec["topic"], rec["partition"], rec["offset"]) == ("it-x.telemetry.mine", partition, offset)
    assert rec["reason"] == reason and rec["detail"] == detail[:2000] and rec["site_id"] == site
    if "reading" in rec:
        assert orjson.loads(out)["reading"] == orjson.loads(orjson.dumps(payload))
        return
    if value is None:
        assert not {"raw", "raw_b64", "raw_bytes"} & set(rec)
        return
    assert rec["raw_bytes"] == len(value)
    assert raw_copy(rec) == value[:RAW_COPY_MAX]
    if len(value) > RAW_COPY_MAX:
        assert rec["raw_truncated"] is True and rec["raw_sha256"] == hashlib.sha256(value).hexdigest()
    else:
        assert "raw_truncated" not in rec and "raw_sha256" not in rec


@PROPERTY
@given(reason=reasons, detail=st.text(max_size=3000), value=values, payload=payloads, site=sites)
@example(reason="malformed_json", detail="", value=b"\x00" * RAW_COPY_MAX, payload=None, site=None)
def test_any_record_stays_under_200_kib(reason, detail, value, payload, site):
    rec = deadletter_record(reason, detail, message(value), payload=payload, site_id=site)
    assert size(rec) < 200 * KiB


@PROPERTY
@given(
    value=values.filter(lambda v: v is not None),
    payload=st.one_of(st.none(), objects.map(lambda p: _printable(p)), depths.map(nested)),
    site=sites,
)
def test_printable_input_gives_a_record_under_200_kib(value, payload, site):
    """Without control characters (they are the case above) the record stays well under 200 KiB."""
    value = bytes(b for b in value if b >= 0x20)  # no control character anywhere
    rec = deadletter_record("malformed_json", "d", message(value), payload=payload, site_id=site)
    assert size(rec) < 200 * KiB


def _printable(obj):
    """The payload with control characters dropped from its strings (their escapes grow 6x)."""
    if isinstance(obj, str):
        return "".join(c for c in obj if c >= " ")
    if isinstance(obj, list):
        return [_printable(x) for x in obj]
    if isinstance(obj, dict):
        return {_printable(k): _printable(v) for k, v in obj.items()}
    return obj
