"""The hot path's msgspec decode never accepts what the pydantic contract refuses, never decodes
differently, and does take every valid message (or the worker would pay the slow path for it)."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.schema import DecodeError, FastFrame, decode_fast, decode_message

KEYS = ["site_id", "sensor_id", "ts", "value", "quality", "seq", "gateway", "readings", "extra"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=1, max_value=32503680000000 + 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.text(min_size=120, max_size=135),
    st.sampled_from(["good", "uncertain", "bad", "GOOD", ""]),
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
field_value = st.one_of(scalars, anything)
reading_like = st.dictionaries(st.sampled_from(KEYS[:6] + ["extra"]), field_value, max_size=6)
mutated = st.deferred(lambda: valid).flatmap(
    lambda d: st.tuples(st.sampled_from(KEYS), field_value).map(lambda kv: {**d, kv[0]: kv[1]})
)
message = st.one_of(
    mutated,
    st.dictionaries(st.sampled_from(KEYS), field_value, max_size=7),
    st.dictionaries(st.sampled_from(KEYS[:7]), field_value, max_size=5).flatmap(
        lambda head: st.lists(reading_like, max_size=3).map(lambda rs: {**head, "readings": rs})
    ),
    anything,
)

ident = st.text(min_size=1, max_size=128)
epoch = st.integers(min_value=1, max_value=32503680000000 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(min_value=-(2**53), max_value=2**53)
quality = st.sampled_from(["good", "uncertain", "bad"])
frame_reading = st.fixed_dictionaries(
    {"sensor_id": ident, "value": finite}, optional={"quality": quality, "seq": st.integers(-(2**63), 2**63 - 1)}
)
valid = st.one_of(
    st.fixed_dictionaries(
        {"site_id": ident, "sensor_id": ident, "ts": epoch, "value": finite},
        optional={"quality": quality, "seq": st.integers(-(2**63), 2**63 - 1)},
    ),
    st.fixed_dictionaries(
        {"site_id": ident, "ts": epoch, "readings": st.lists(frame_reading, min_size=1, max_size=4)},
        optional={"gateway": ident},
    ),
)


def _plain(msg) -> dict:
    return msgspec.to_builtins(msg) if isinstance(msg, msgspec.Struct) else msg.model_dump()


def _without_defaults(d: dict) -> dict:
    out = {k: v for k, v in d.items() if not (k in ("seq", "gateway") and v is None)}
    if "readings" in out:
        out["readings"] = [_without_defaults(r) for r in out["readings"]]
    return out


@settings(max_examples=2000, deadline=None)
@given(message)
def test_what_the_fast_path_accepts_the_contract_accepts_with_the_same_values(obj):
    raw = json.dumps(obj, allow_nan=True).encode()
    fast = decode_fast(raw)
    if fast is None:
        return
    slow = decode_message(raw)  # must not raise
    assert isinstance(fast, FastFrame) == hasattr(slow, "readings")
    assert _without_defaults(_plain(fast)) == _without_defaults(_plain(slow))


@settings(max_examples=1000, deadline=None)
@given(valid)
def test_every_valid_message_takes_the_fast_path(obj):
    raw = json.dumps(obj).encode()
    assert decode_fast(raw) is not None
    assert _without_defaults(_plain(decode_fast(raw))) == _without_defaults(_plain(decode_message(raw)))


def test_refused_input_falls_back_to_the_errors_that_name_the_field():
    raw = b'{"site_id": "s", "ts": 1795600000000, "readings": [{"sensor_id": "a", "value": "3"}]}'
    assert decode_fast(raw) is None
    try:
        decode_message(raw)
    except DecodeError as exc:
        assert exc.reason == "invalid_field" and "readings.0.value" in exc.detail
    else:
        raise AssertionError("a string value was accepted")


def test_seq_bounds_are_the_contracts():
    """Found by the property above in CI: msgspec took a `seq` of any size, pydantic only i64/u64."""
    cases = [  # seq, fast path takes it, the contract takes it
        (-(2**63), True, True),
        (-(2**63) - 1, False, False),
        (2**63 - 1, True, True),
        (2**64 - 1, False, True),  # u64: left to the slow path, which takes it
        (2**64, False, False),
    ]
    for seq, fast_ok, ok in cases:
        raw = b'{"site_id": "s", "sensor_id": "a", "ts": 1795600000000, "value": 1, "seq": %d}' % seq
        frame = b'{"site_id": "s", "ts": 1795600000000, "readings": [{"sensor_id": "a", "value": 1, "seq": %d}]}' % seq
        for message in (raw, frame):
            assert (decode_fast(message) is not None) == fast_ok, (seq, message)
            try:
                decode_message(message)
                accepted = True
            except DecodeError:
                accepted = False
            assert accepted == ok, (seq, message)
