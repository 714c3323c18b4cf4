"""The worker's pipeline with a reorder hold, no broker: shuffled messages, a kill at every point.

Offsets commit only up to the oldest message with a reading still held, and a site's checkpoint
says how far its readings were evaluated; a "restart" restores the checkpoints and reads again
from the committed offset. Whatever the kill point, the hazards and the final rule state are
exactly those of the sorted input, and no dead-letter is sent twice.
"""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from config.settings import Settings
from rules.engine import RuleEngine
from sensors.deadletter import RawMessage
from sensors.schema import encode
from streams.pipeline import Pipeline

from .rules_helpers import T0, frame, run

TOPIC, HOLD_MS, BOUND_MS = "telemetry.hazchem", 5000, 3000
GAS = [1, 12, 28, 52, 53, 30, 3, 27, 55, 20, 2, 1, 60, 61, 24, 1, 0, 30, 2, 1]


def scenario():
    """Two sites' frames in event-time order, a late reading and a frame with an unknown sensor."""
    frames = [frame("site-a", t, a_gas1=v, a_temp1=20 + v) for t, v in enumerate(GAS)]
    frames += [frame("site-b", t + 0.5, b_gas1=GAS[-1 - t]) for t in range(len(GAS))]
    frames.sort(key=lambda f: f.ts)
    return frames


def shuffled(frames, seed: int):
    """Each frame delayed by up to BOUND_MS of event time (bounded displacement, seeded)."""
    rng = random.Random(seed)
    return [f for _, _, f in sorted((f.ts + rng.randrange(BOUND_MS + 1), k, f) for k, f in enumerate(frames))]


def messages(frames) -> list[RawMessage]:
    values = [encode(f) for f in frames]
    # 70 s behind site-a's newest when it arrives: late, whatever the hold
    values.append(orjson.dumps({"site_id": "site-a", "sensor_id": "a-gas1", "ts": T0 - 60_000, "value": 1}))
    values.insert(7, orjson.dumps({"site_id": "site-b", "sensor_id": "nobody", "ts": T0 + 4000, "value": 1}))
    return [RawMessage(TOPIC, 0, k, orjson.loads(v)["site_id"].encode(), v) for k, v in enumerate(values)]


class Worker:
    """A pipeline with what a worker process would do around it: commit and checkpoint."""

    def __init__(self, registry, snapshots: dict[str, bytes]):
        self.sent: list[tuple[str, bytes, bytes]] = []
        settings = Settings(reorder_ms=HOLD_MS, lateness_s=60.0, influx_write_readings=False)
        self.pipeline = Pipeline(settings, RuleEngine(registry), self.send, None)
        for site in ("site-a", "site-b"):
            snap = snapshots.get(site)
            self.pipeline.adopt(site, TOPIC, 0, orjson.loads(snap) if snap else None)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))

    async def commit(self, upto: int) -> int:
        """Checkpoint, then the offset a worker would commit after handling everything before `upto`."""
        await self.pipeline.checkpoint()
        return self.pipeline.committable(TOPIC, 0, upto)

    async def quiet(self) -> None:
        """Long after the last message: quiet sites' held readings go out."""
        self.pipeline._site_caught[:] = True
        self.pipeline._seen_wall[self.pipeline._seen_wall > 0] -= 3600
        await self.pipeline.release_due()

    def topic(self, name: str) -> list[dict]:
        return [orjson.loads(v) for t, _, v in self.sent if t == name]


def transitions(events: list[dict]) -> set[tuple]:
    return {(h["hazard_id"], h["event"], h["kind"], h["sensor_id"], h["ts"], h["flapping"]) for h in events}


async def run_with_kill(registry, msgs: list[RawMessage], kill: int | None, batch_sizes: list[int]):
    """Feed `msgs` in batches, checkpoint and commit after each, kill after batch `kill`, restart."""
    first, committed, snapshots, pos, durable = Worker(registry, {}), 0, {}, 0, 0
    workers = [first]
    for n, size in enumerate(batch_sizes):
        if pos >= len(msgs):
            break
        await first.pipeline.handle(msgs[pos : pos + size])
        pos += size
        if n == kill:
            break  # SIGKILL: neither this batch's checkpoint nor its commit happens
        committed = await first.commit(pos)
        snapshots = {k.decode(): v for t, k, v in first.sent if t.endswith("rulestate")}
        durable = len(first.sent)  # what the killed worker sent after this may be sent again
    else:
        kill = None
        durable = len(first.sent)
    if kill is not None:
        second = Worker(registry, snapshots)
        workers.append(second)
        for k in range(committed, len(msgs), 3):
            await second.pipeline.handle(msgs[k : k + 3])
    await workers[-1].quiet()
    hazards = [h for w in workers for h in w.topic("hazards")]
    kept = [orjson.loads(v) for t, _, v in first.sent[:durable] if t == "deadletter"]
    dead = [(d["reason"], d["offset"]) for d in kept + (second.topic("deadletter") if kill is not None else [])]
    return hazards, dead, workers[-1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_kill_at_any_point_loses_and_repeats_nothing(mini_registry, seed):
    ordered = scenario()
    reference = RuleEngine(mini_registry)
    want = transitions([orjson.loads(h.to_json()) for h in run(reference, *ordered).hazards])
    assert len(want) >= 10
    msgs = messages(shuffled(ordered, seed))
    rng = random.Random(seed)
    sizes = [rng.randint(1, 4) for _ in msgs]
    for kill in [None, *range(len(msgs))]:
        hazards, dead, last = asyncio.run(run_with_kill(mini_registry, msgs, kill, sizes))
        assert transitions(hazards) == want, f"kill after batch {kill}"
        # the unknown sensor and the late reading, each dead-lettered once (work after the last
        # checkpoint is done again after a kill, as without a hold)
        assert sorted(dead) == [("late", len(msgs) - 1), ("unknown_sensor", 7)], f"kill after batch {kill}"
        for site in ("site-a", "site-b"):
            assert last.pipeline.engine.snapshot_site(site) == reference.snapshot_site(site), (kill, site)


def test_without_the_hold_the_same_messages_give_other_hazards(mini_registry):
    ordered = scenario()
    want = transitions([orjson.loads(h.to_json()) for h in run(RuleEngine(mini_registry), *ordered).hazards])
    sent: list[tuple[str, bytes, bytes]] = []

    async def send(topic, key, value):
        sent.append((topic, key, value))

    async def feed():
        pipeline = Pipeline(Settings(reorder_ms=0, influx_write_readings=False), RuleEngine(mini_registry), send, None)
        for m in messages(shuffled(ordered, 1)):
            await pipeline.handle([m])

    asyncio.run(feed())
    got = transitions([orjson.loads(v) for t, _, v in sent if t == "hazards"])
    assert got != want


def test_timers_never_run_ahead_of_held_readings_and_a_quiet_site_is_flushed(mini_registry):
    worker = Worker(mini_registry, {})
    pipeline, engine = worker.pipeline, worker.pipeline.engine
    pipeline.reloader.maybe_reload = lambda engine: None  # the mini registry's rules stay as they are
    clocks: list = []
    advance = engine.advance
    engine.advance = lambda now, site_clock: clocks.append(site_clock.copy()) or advance(now, site_clock)
    a = engine.site_row["site-a"]
    msgs = [RawMessage(TOPIC, 0, t, b"site-a", encode(frame("site-a", t, a_gas1=1))) for t in range(12)]

    async def go():
        await pipeline.handle(msgs)
        pipeline._seen_wall[a] -= 4.0  # 4 s of wall time since the newest (11 s) arrived
        await pipeline.tick()  # the watermark is at 11 - 5 + 4 = 10 s: the reading at 11 s is held
        held = int(pipeline.reorder.ts.min())
        assert held == T0 + 11_000 and pipeline.site_clocks()[a] > held  # the clock alone would pass it
        assert clocks[-1][a] < held
        await worker.quiet()  # an hour later: the site's last reading goes, and its clock runs on
        assert len(pipeline.reorder) == 0
        await pipeline.tick()
        assert clocks[-1][a] > T0 + 11_000

    asyncio.run(go())
