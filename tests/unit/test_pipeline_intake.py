"""The worker's inline intake of single readings takes exactly what the per-message reference takes.

`Pipeline._take_all` decodes the common message (one valid reading of a known sensor, not read
before) inline, and sends the rest through `_redelivered` and `_take`. Whatever the messages and
the restored checkpoints, it must give the same readings, in the same order, to the same batch
(new, resumed, redelivered), and the same dead-letters as `_redelivered` + `_take` per message.
"""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import Settings
from rules.engine import RuleEngine
from sensors.deadletter import RawMessage
from streams.pipeline import Pipeline

from .rules_helpers import T0

TOPIC = "telemetry.hazchem"
NOW_MS = T0 + 3_600_000


def pipeline(registry, restored: dict[str, int]) -> Pipeline:
    """A pipeline owning both sites on TOPIC:0, each restored from a checkpoint covering up to its offset."""
    p = Pipeline(Settings(influx_write_readings=False), RuleEngine(registry), _discard, None)
    for site in ("site-a", "site-b"):
        snap = {"v": 2, "src": [TOPIC, 0, restored[site]]} if site in restored else None
        p.adopt(site, TOPIC, 0, snap)
    return p


async def _discard(topic: str, key: bytes, value: bytes) -> None:
    return None


def taken(p: Pipeline, messages: list[RawMessage], *, inline: bool) -> dict:
    """What a batch's intake produced: each builder's columns and the dead-letters' reasons."""
    builder, resumed, again = p.engine.new_batch(), p.engine.new_batch(), p.engine.new_batch()
    dead: list = []
    if inline:
        p._take_all(messages, builder, resumed, again, dead, NOW_MS)
    else:
        for m in messages:
            handled = p._redelivered(m)
            if handled is None:
                p._take(m, builder, dead, NOW_MS)
            else:
                p._take(m, resumed, None, NOW_MS, again=again, handled=handled)

    def columns(b) -> list[tuple]:
        rejects = [(r.reason, r.origin.offset) for r in b.rejects]
        return [list(zip(b.idx, b.ts, b.value, b.good, [o.offset for o in b.origin], b.slot, strict=True)), rejects]

    return {
        "new": columns(builder),
        "resumed": columns(resumed),
        "again": columns(again),
        "dead": [(reason, rec["offset"], key) for reason, rec, key in dead],
    }


SITES = st.sampled_from(["site-a", "site-b", "site-z"])
SENSORS = st.sampled_from(["a-gas1", "a-temp1", "b-gas1", "nobody", "readings"])
WHEN = st.sampled_from([T0, T0 + 1000, NOW_MS, NOW_MS + 3_600_000, 1_764_000_000])  # future; seconds
VALUES = st.one_of(st.floats(-10, 200, allow_nan=False), st.just("x"), st.none())


@st.composite
def payload(draw) -> bytes | None:
    """A single reading, a frame, or something the models refuse."""
    kind = draw(st.sampled_from(["reading", "reading", "reading", "frame", "junk", "empty", "extra"]))
    site, sensor, ts, value = draw(SITES), draw(SENSORS), draw(WHEN), draw(VALUES)
    if kind == "empty":
        return None
    if kind == "junk":
        return draw(st.sampled_from([b"{", b"[]", b'"x"', b"{}"]))
    if kind == "frame":
        return orjson.dumps({"site_id": site, "ts": ts, "readings": [{"sensor_id": sensor, "value": value}]})
    body: dict = {"site_id": site, "sensor_id": sensor, "ts": ts, "value": value}
    if draw(st.booleans()):
        body["quality"] = draw(st.sampled_from(["good", "bad", "uncertain", "so-so"]))
    if kind == "extra":
        body["colour"] = "red"
    return orjson.dumps(body)


@st.composite
def batches(draw) -> tuple[dict[str, int], list[list[RawMessage]]]:
    """Checkpoints restored up to some offsets, then the partition's messages from 0, in batches."""
    n = draw(st.integers(1, 40))
    restored = draw(st.dictionaries(st.sampled_from(["site-a", "site-b"]), st.integers(-1, n)))
    messages = []
    for offset in range(n):
        value = draw(payload())
        key = draw(st.sampled_from([b"site-a", b"site-b", None]))
        messages.append(RawMessage(TOPIC, 0, offset, key, value))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4))) if n > 1 else []
    bounds = [0, *cuts, n]
    return restored, [messages[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_inline_intake_takes_what_the_reference_takes(mini_registry, case):
    restored, parts = case
    inline, reference = pipeline(mini_registry, restored), pipeline(mini_registry, restored)
    for part in parts:
        assert taken(inline, part, inline=True) == taken(reference, part, inline=False)
        # The reference leaves the newest offset per partition to the caller, as handle did.
        for m in part:
            reference.last_offset[(m.topic, m.partition)] = m.offset


def test_a_restored_checkpoint_still_marks_what_it_covers_as_redelivered(mini_registry):
    p = pipeline(mini_registry, {"site-a": 2})
    reading = {"site_id": "site-a", "sensor_id": "a-gas1", "value": 3.0}
    msgs = [RawMessage(TOPIC, 0, k, b"site-a", orjson.dumps({**reading, "ts": T0 + k})) for k in range(5)]
    got = taken(p, msgs, inline=True)
    assert [row[4] for row in got["again"][0]] == [0, 1, 2]  # stored again, not evaluated again
    assert [row[4] for row in got["new"][0]] == [3, 4]
    assert got["dead"] == []
