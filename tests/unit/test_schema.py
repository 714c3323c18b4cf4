"""The telemetry contract: readings, frames, and errors that name the field."""

from __future__ import annotations

import orjson
import pytest

from sensors.schema import DecodeError, Frame, Reading, decode_message, encode, split_frame

T = 1_764_000_000_000


def test_reading_and_frame_round_trip():
    r = Reading(site_id="s", sensor_id="x", ts=T, value=1.5, seq=3)
    f = Frame(site_id="s", ts=T, readings=[{"sensor_id": "x", "value": 2}])
    assert decode_message(encode(r)) == r
    assert decode_message(encode(f)) == f
    assert decode_message(encode(f)).readings[0].quality == "good"


@pytest.mark.parametrize(
    "raw,reason,field",
    [
        (b"{not json", "malformed_json", None),
        (b"[1,2]", "malformed_message", None),
        (orjson.dumps({"site_id": "s", "sensor_id": "x", "ts": T, "value": "12.5"}), "invalid_field", "value"),
        (orjson.dumps({"site_id": "s", "sensor_id": "x", "ts": T}), "invalid_field", "value"),
        (
            orjson.dumps({"site_id": "s", "sensor_id": "x", "ts": T, "value": 1, "quality": "meh"}),
            "invalid_field",
            "quality",
        ),
        (orjson.dumps({"site_id": "s", "sensor_id": "x", "ts": "yesterday", "value": 1}), "invalid_field", "ts"),
        (orjson.dumps({"site_id": "s", "sensor_id": "x", "ts": T, "value": 1, "colour": 1}), "invalid_field", "colour"),
        (
            orjson.dumps({"site_id": "s", "ts": T, "readings": [{"sensor_id": "a", "value": 1}, {"sensor_id": "b"}]}),
            "invalid_field",
            "readings.1.value",
        ),
        (b'{"site_id": "s", "sensor_id": "x", "ts": 1764000000000, "value": NaN}', "malformed_json", None),
        (b'{"site_id": "s", "sensor_id": "x", "ts": 1764000000000, "value": 1e999}', "malformed_json", None),
    ],
)
def test_bad_messages_name_reason_and_field(raw, reason, field):
    with pytest.raises(DecodeError) as exc:
        decode_message(raw)
    assert exc.value.reason == reason
    if field:
        assert field in exc.value.detail


def test_split_frame_keeps_good_readings():
    obj = {
        "site_id": "s",
        "ts": T,
        "readings": [{"sensor_id": "a", "value": 1}, {"sensor_id": "b", "value": "x"}, {"sensor_id": "c", "value": 3}],
    }
    frame, bad = split_frame(obj)
    assert [r.sensor_id for r in frame.readings] == ["a", "c"]
    assert len(bad) == 1 and bad[0][1].startswith("readings.1.value")


def test_split_frame_refuses_a_frame_with_bad_head():
    frame, bad = split_frame({"site_id": "s", "ts": -5, "readings": [{"sensor_id": "a", "value": 1}]})
    assert frame is None and bad == []
