"""Over 2,000 inputs drawn by hypothesis (JSON structure, sizes, nesting depth, encodings, numbers,
timestamps) mixed with valid frames through one live worker: the worker stays up, every valid
reading is stored, and every fuzzed message is accounted for, either as a dead-letter record at
its own topic/partition/offset with a known reason, or, when the worker took it whole, with all
its readings in InfluxDB. Nothing is silently lost.

The hand-made flood beside this file checks each bad kind's exact reason; this one checks that
inputs nobody thought of are not lost either.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.topics import DEADLETTER_TOPIC
from safewatch.stack import create_influx_database
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry
from sensors.schema import DecodeError, decode_message
from sensors.simulator import PlantSimulator
from streams.influx import query, rows

from .pipeline_helpers import metric, read_topic, spawn, stop, wait_for
from .scenario import isolated

FUZZED = 3_000  # asked of hypothesis; at least 2,000 distinct must come back
REASONS = {
    "malformed_json",
    "malformed_message",
    "invalid_field",
    "unknown_sensor",
    "sensor_not_of_site",
    "late",
    "future",
}


def fuzz_inputs(registry, start_ms: int) -> list[bytes]:
    """Telemetry-shaped and shapeless inputs, drawn by hypothesis (derandomized: the same every run)."""
    sites = sorted(registry.sites)
    sensors = sorted(registry.sensors)
    leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    any_json = st.recursive(
        leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10
    )
    known = st.sampled_from(sites)
    site = known | known | known | st.text(max_size=140)

    def mostly(good, bad):
        """`good` four times in five: valid fields must be common enough for whole messages to pass."""
        return st.integers(0, 4).flatmap(lambda n: bad if n == 0 else good)

    in_span = st.integers(start_ms, start_ms + 40_000)  # inside the valid frames' span: taken, never making them late
    site = mostly(st.sampled_from(sites), st.text(max_size=140))
    ts = mostly(in_span, st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=14) | st.none())
    value = mostly(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats() | st.integers(-(10**20), 10**20) | st.text(max_size=8) | st.none() | any_json,
    )
    quality = mostly(st.sampled_from(["good", "uncertain", "bad"]), st.text(max_size=8))

    @st.composite
    def point(draw, site_id: str | None):
        own = [s.id for s in registry.sensors_of_site(site_id)] if site_id in registry.sites else []
        sensor = draw(mostly(st.sampled_from(own or sensors), st.sampled_from(sensors) | st.text(max_size=20)))
        obj = {"sensor_id": sensor, "value": draw(value)}
        if draw(st.booleans()):
            obj["quality"] = draw(quality)
        if draw(st.integers(0, 3)) == 0:  # an unknown key, or `seq` of any type
            obj[draw(st.sampled_from(["seq", "unit", "x"]))] = draw(any_json)
        return obj

    @st.composite
    def reading(draw):
        s = draw(site)
        obj = {"site_id": s, "ts": draw(ts), **draw(point(s))}
        if draw(st.integers(0, 3)) == 0:  # now and then a required field is missing
            del obj[draw(st.sampled_from(sorted(obj)))]
        return obj

    @st.composite
    def frame(draw):
        s = draw(site)
        obj = {"site_id": s, "ts": draw(ts), "readings": draw(st.lists(point(s), max_size=6))}
        if draw(st.booleans()):
            obj["gateway"] = draw(st.text(max_size=10) | st.integers())
        return obj

    @st.composite
    def encoded(draw):
        obj = draw(frame() | reading() | any_json)
        text = json.dumps(obj, ensure_ascii=draw(st.booleans()))  # NaN/Infinity and huge ints as Python writes them
        how = draw(st.sampled_from(["utf8", "utf8", "utf8", "utf16", "bom", "truncate", "latin1", "nest", "pad"]))
        raw = text.encode("utf-8", "surrogatepass")
        if how == "utf16":
            raw = text.encode("utf-16", "surrogatepass")
        elif how == "bom":
            raw = b"\xef\xbb\xbf" + raw
        elif how == "truncate":
            raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
        elif how == "latin1":
            raw = text.encode("latin-1", "replace")
        elif how == "nest":
            depth = draw(st.integers(1, 1500))
            raw = b'{"site_id":' + orjson.dumps(sites[0]) + b',"x":' + b"[" * depth + b"]" * depth + b"}"
        elif how == "pad" and isinstance(obj, dict):
            raw = json.dumps({**obj, "pad": "x" * draw(st.sampled_from([1, 1_000, 70_000, 300_000]))}).encode()
        return raw

    out: list[bytes] = []

    @hsettings(
        max_examples=FUZZED,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(encoded())
    def collect(raw: bytes) -> None:
        out.append(raw)

    collect()
    return out


def _site_key(raw: bytes, registry, rng: random.Random) -> str:
    """The message's own site when it names a known one (so it lands on that site's partition)."""
    try:
        site = orjson.loads(raw).get("site_id")
    except (orjson.JSONDecodeError, AttributeError):
        site = None
    return site if isinstance(site, str) and site in registry.sites else rng.choice(sorted(registry.sites))


@pytest.mark.asyncio
async def test_fuzzed_inputs_are_stored_or_dead_lettered_never_lost(stack, tmp_path):
    settings = await isolated(stack, influx_db=f"fuzz_{uuid.uuid4().hex[:8]}")
    create_influx_database(settings)
    registry = load_registry(settings.registry)
    start = int(time.time() * 1000) - 120_000
    sim = PlantSimulator(registry, seed=9, start_ms=start, tick_s=1.0)
    valid = [m for _ in range(40) for m in sim.tick()]
    fuzzed = fuzz_inputs(registry, start)
    assert len(set(fuzzed)) >= 2_000, len(set(fuzzed))

    rng = random.Random(13)
    slots = ["valid"] * len(valid) + ["fuzz"] * len(fuzzed)
    rng.shuffle(slots)
    goods, fuzz = iter(valid), iter(fuzzed)
    worker = spawn(settings, tmp_path / "worker.log", "worker")
    deliveries: list[tuple[bool, bytes, asyncio.Future]] = []
    try:
        async with TelemetryProducer(settings.bootstrap, linger_ms=5, max_request_size=2 * 1024 * 1024) as p:
            for slot in slots:
                if slot == "valid":
                    topic, key, value = next(goods)
                    deliveries.append((False, value, await p.send(settings.topic(topic), key, value)))
                else:
                    raw = next(fuzz)
                    key = _site_key(raw, registry, rng)
                    topic = settings.topic(f"telemetry.{registry.sites[key].sector}")
                    deliveries.append((True, raw, await p.send(topic, key, raw)))
            await p.flush()
            sent = [(is_fuzz, raw, await fut) for is_fuzz, raw, fut in deliveries]
        await wait_for(
            lambda: metric(settings, "safewatch_messages_total"),
            180,
            f"the worker to read {len(sent)} messages (log: {tmp_path / 'worker.log'})",
            at_least=len(sent),
        )
        assert worker.poll() is None, "the worker died"
        dead = await read_topic(settings, DEADLETTER_TOPIC, until=lambda m: True, timeout=60, settle=3.0)
        await asyncio.sleep(2)
        series = await asyncio.to_thread(query, settings, 'SELECT "value" FROM "reading" GROUP BY "sensor_id"')
        stored = {(r["sensor_id"], int(r["time"])) for r in rows(series)}
    finally:
        stop(worker)

    dead_at = {(d["topic"], d["partition"], d["offset"]) for d in dead}
    expected = {(r["sensor_id"], f["ts"]) for _, _, v in valid for f in [orjson.loads(v)] for r in f["readings"]}
    lost, taken, refused = [], 0, 0
    for is_fuzz, raw, md in sent:
        if not is_fuzz:
            continue
        if (md.topic, md.partition, md.offset) in dead_at:
            refused += 1
            continue
        try:
            msg = decode_message(raw)
        except DecodeError:
            lost.append(raw[:200])  # neither dead-lettered nor decodable: silently dropped
            continue
        readings = getattr(msg, "readings", None) or [msg]
        points = {(r.sensor_id, msg.ts) for r in readings}
        if points <= stored:
            taken += 1
        else:
            lost.append(raw[:200])
    reasons = Counter(d["reason"] for d in dead)
    print(
        f"\nfuzz flood: {len(fuzzed)} fuzzed inputs among {len(valid)} valid frames; "
        f"{refused} dead-lettered, {taken} taken whole, {len(lost)} lost; dead-letters by reason {dict(reasons)}; "
        f"valid readings stored {len(expected & stored)}/{len(expected)}"
    )
    assert not lost, lost[:5]
    assert set(reasons) <= REASONS, reasons
    assert all(d["detail"] for d in dead)
    assert expected <= stored, f"{len(expected - stored)} valid readings not stored"
    assert refused > 1_000 and taken > 100  # the fuzz reaches both outcomes
