"""A flood of 2,000 bad inputs mixed with valid frames through one live worker: the stream does not
stop, every valid reading is stored, every bad input is in `deadletter` once with its reason, and
a reading stamped in the future is refused without making later true readings `late`."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter

import orjson
import pytest

from config.topics import DEADLETTER_TOPIC
from safewatch.stack import create_influx_database
from sensors.producer import TelemetryProducer
from sensors.registry import load_registry
from sensors.simulator import PlantSimulator
from streams.influx import query, rows

from .pipeline_helpers import metric, read_topic, spawn, stop, wait_for
from .scenario import isolated

BAD = 2_000
DAY_MS = 86_400_000


def bad_inputs(rng: random.Random, registry, t_ms: int, seen: set[str]) -> list[tuple[str, bytes, str]]:
    """(site key, bytes, the dead-letter reason it must get) for BAD inputs of every kind;
    `seen` are sensors with a reading before any of these (so one stamped in seconds is late)."""
    sites = list(registry.sites.values())
    out = []
    for n in range(BAD):
        site = rng.choice(sites)
        sensor = rng.choice(registry.sensors_of_site(site.id))
        other = next(s for s in registry.sensors.values() if s.site_id != site.id)
        good = {"site_id": site.id, "sensor_id": sensor.id, "ts": t_ms, "value": 1.0}
        kind = n % 14
        if kind == 0:
            out.append(
                (site.id, bytes(rng.randrange(128, 256) for _ in range(rng.randrange(1, 200))), "malformed_json")
            )
        elif kind == 1:
            out.append((site.id, b"{not json" + str(rng.random()).encode(), "malformed_json"))
        elif kind == 2:
            out.append((site.id, rng.choice([b"[1,2,3]", b'"text"', b"42", b"null", b"true"]), "malformed_message"))
        elif kind == 3:
            depth = rng.choice([rng.randrange(300, 1000), rng.randrange(1100, 1500)])  # orjson stops at 1024
            out.append(
                (
                    site.id,
                    b'{"site_id":"' + site.id.encode() + b'","x":' + b"[" * depth + b"]" * depth + b"}",
                    "malformed_json" if depth > 1024 else "invalid_field",
                )
            )
        elif kind == 4 and n == 18:  # a 1 MiB site id: its dead-letter (and the record's key) must be cut
            out.append((site.id, orjson.dumps({"site_id": "s" * 1_000_000, "ts": 1}), "invalid_field"))
        elif kind == 4 and n % 280 == 4:  # a few very large ones (~900 KiB, under the producer's 1 MiB)
            out.append((site.id, orjson.dumps({**good, "note": "x" * 900_000}), "invalid_field"))
        elif kind == 4:
            out.append((site.id, orjson.dumps({**good, "note": "x" * rng.randrange(10, 5000)}), "invalid_field"))
        elif kind == 5:
            out.append(
                (
                    site.id,
                    orjson.dumps(good).replace(b"1.0", rng.choice([b"NaN", b"Infinity", b"-Infinity"])),
                    "malformed_json",
                )
            )
        elif kind == 6:
            bad_ts = rng.choice(["yesterday", None, [], {"ms": 1}, 1.5])
            out.append((site.id, orjson.dumps({**good, "ts": bad_ts}), "invalid_field"))
        elif kind == 7:
            out.append(
                (site.id, orjson.dumps({**good, "value": rng.choice(["12.5", None, [], "x" * 50])}), "invalid_field")
            )
        elif kind == 8:
            out.append((site.id, orjson.dumps({**good, "sensor_id": f"no-such-{n}"}), "unknown_sensor"))
        elif kind == 9:
            out.append((site.id, orjson.dumps({**good, "sensor_id": other.id}), "sensor_not_of_site"))
        elif kind == 10:
            early = rng.choice(sorted(seen))
            s_site = registry.sensors[early].site_id
            out.append(
                (
                    s_site,
                    orjson.dumps({"site_id": s_site, "sensor_id": early, "ts": t_ms // 1000, "value": 1.0}),
                    "late",
                )
            )  # seconds, not ms
        elif kind == 11:
            ahead = rng.choice([DAY_MS, 973 * 365 * DAY_MS, 10 * 60_000])
            out.append((site.id, orjson.dumps({**good, "ts": t_ms + ahead}), "future"))
        elif kind == 12:
            out.append((site.id, orjson.dumps({**good, "quality": rng.choice(["meh", 3])}), "invalid_field"))
        else:
            out.append((site.id, b"", "malformed_json"))
    return out


@pytest.mark.asyncio
async def test_a_flood_of_poison_stops_nothing_and_loses_nothing(stack, tmp_path):
    settings = await isolated(stack, influx_db=f"poison_{uuid.uuid4().hex[:8]}")
    create_influx_database(settings)
    registry = load_registry(settings.registry)
    start = int(time.time() * 1000) - 120_000
    sim = PlantSimulator(registry, seed=3, start_ms=start, tick_s=1.0)
    valid = [m for _ in range(40) for m in sim.tick()]  # 40 s of every site: frames, no scenarios
    expected = set()
    for _, _, value in valid:
        frame = orjson.loads(value)
        expected |= {(r["sensor_id"], frame["ts"]) for r in frame["readings"]}
    rng = random.Random(5)
    # Poison after the first ticks (so "seconds" readings are behind a real newest), spread among the
    # rest, which keep their time order (a shuffle would make some of them late).
    head, tail = valid[: len(valid) // 8], valid[len(valid) // 8 :]
    seen = {r["sensor_id"] for _, _, v in head for r in orjson.loads(v)["readings"]}
    bad = bad_inputs(rng, registry, start + 5_000, seen)
    slots = ["valid"] * len(tail) + ["bad"] * len(bad)
    rng.shuffle(slots)
    goods = iter((settings.topic(t), k, v) for t, k, v in tail)
    bads = iter((settings.topic(f"telemetry.{registry.sites[k].sector}"), k, v) for k, v, _ in bad)
    sent = [(settings.topic(t), k, v) for t, k, v in head] + [next(goods if s == "valid" else bads) for s in slots]

    worker = spawn(settings, tmp_path / "worker.log", "worker")
    try:
        async with TelemetryProducer(settings.bootstrap, linger_ms=5, max_request_size=2 * 1024 * 1024) as p:
            for topic, key, value in sent:
                await p.send(topic, key, value)
            await p.flush()
        await wait_for(
            lambda: metric(settings, "safewatch_messages_total"),
            180,
            f"the worker to read {len(sent)} messages (log: {tmp_path / 'worker.log'})",
            at_least=len(sent),
        )
        assert worker.poll() is None, "the worker died"
        dead = await read_topic(settings, DEADLETTER_TOPIC, until=lambda m: len(m) >= BAD, timeout=60)
        await asyncio.sleep(2)
        series = await asyncio.to_thread(
            query, settings, f'SELECT "value" FROM "reading" WHERE time >= {start - 1000}ms GROUP BY "sensor_id"'
        )
        stored = {(r["sensor_id"], int(r["time"])) for r in rows(series)}
    finally:
        stop(worker)

    want = Counter(reason for _, _, reason in bad)
    got = Counter(d["reason"] for d in dead)
    print(
        f"\npoison flood: {len(valid)} valid frames ({len(expected)} readings), {BAD} bad inputs; "
        f"dead-lettered by reason {dict(got)}; readings stored {len(stored & expected)}/{len(expected)}"
    )
    assert got == want
    assert all(len(orjson.dumps(d)) < 1024 * 1024 for d in dead)
    assert all({"topic", "partition", "offset", "detail"} <= set(d) for d in dead)
    assert expected <= stored, f"{len(expected - stored)} valid readings not stored"
