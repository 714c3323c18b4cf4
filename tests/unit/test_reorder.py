"""The reorder buffer (rules/reorder.py): held per site until the watermark passes, handed out sorted."""

from __future__ import annotations

import random

import numpy as np

from rules.engine import NEVER, RuleEngine
from rules.reorder import ReorderBuffer
from sensors.schema import Frame

from .rules_helpers import T0, frame, run


def buffer(engine: RuleEngine) -> ReorderBuffer:
    return ReorderBuffer(engine.sensor_site, len(engine.site_ids), engine.lateness_ms)


def push(engine: RuleEngine, buf: ReorderBuffer, *frames: Frame, offset: int = 0) -> np.ndarray:
    b = engine.new_batch()
    for k, f in enumerate(frames):
        b.add(f, origin=offset + k)
    batch = b.build()
    return buf.push(batch, np.asarray(batch.origin), engine.last_ts)


def upto(engine: RuleEngine, site: str, t_s: float) -> np.ndarray:
    w = np.full(len(engine.site_ids), NEVER, dtype=np.int64)
    w[engine.site_row[site]] = T0 + int(t_s * 1000)
    return w


def test_readings_wait_for_their_sites_watermark_and_come_out_sorted(mini_registry):
    engine = RuleEngine(mini_registry)
    buf = buffer(engine)
    push(engine, buf, frame("site-a", 3, a_gas1=3), frame("site-a", 1, a_gas1=1), frame("site-b", 0, b_gas1=0))
    push(engine, buf, frame("site-a", 2, a_gas1=2), frame("site-a", 5, a_gas1=5), offset=3)
    out = buf.release(upto(engine, "site-a", 3))
    assert out.ts.tolist() == [T0 + 1000, T0 + 2000, T0 + 3000]
    assert out.value.tolist() == [1, 2, 3] and out.origin == [1, 3, 0]  # the origin travels with its reading
    assert len(buf) == 2  # site-a at 5 s, and site-b: its watermark did not move
    # A watermark never goes back: a lower one releases nothing and keeps the old mark.
    assert len(buf.release(upto(engine, "site-a", 0))) == 0
    assert buf.released_to[engine.site_row["site-a"]] == T0 + 3000


def test_equal_event_times_keep_arrival_order(mini_registry):
    engine = RuleEngine(mini_registry)
    buf = buffer(engine)
    push(engine, buf, frame("site-a", 2, a_gas1=7), frame("site-a", 1, a_gas1=1), frame("site-a", 2, a_gas1=8))
    assert buf.release(upto(engine, "site-a", 9)).value.tolist() == [1, 7, 8]


def test_late_is_decided_on_arrival_against_the_newest_held_reading(mini_registry):
    engine = RuleEngine(mini_registry, lateness_s=60)
    buf = buffer(engine)
    push(engine, buf, frame("site-a", 100, a_gas1=1))
    # 50 s behind: within the lateness, held; 61 s behind the held (not yet evaluated) newest: late.
    late = push(engine, buf, frame("site-a", 50, a_gas1=2), frame("site-a", 39, a_gas1=3, a_temp1=20), offset=1)
    assert late.tolist() == [1]  # a-gas1 of the second frame; a-temp1 has no newer reading, so it is held
    assert sorted(buf.release(upto(engine, "site-a", 100)).value.tolist()) == [1, 2, 20]


def test_held_from_names_the_oldest_offset_still_held_per_site(mini_registry):
    engine = RuleEngine(mini_registry)
    buf = buffer(engine)
    a, b = engine.site_row["site-a"], engine.site_row["site-b"]
    push(
        engine, buf, frame("site-a", 5, a_gas1=1), frame("site-b", 1, b_gas1=1), frame("site-a", 2, a_gas1=1), offset=10
    )
    assert (buf.held_from([a]), buf.held_from([b]), buf.held_from([a, b])) == (10, 11, 10)
    buf.release(upto(engine, "site-a", 4))  # the one at offset 12 goes; offset 10 (5 s) stays
    assert buf.held_from([a]) == 10
    buf.release(upto(engine, "site-a", 5))
    assert buf.held_from([a]) is None and buf.held_from([a, b]) == 11
    buf.forget([b])
    assert len(buf) == 0 and buf.released_to[b] == NEVER and buf.site_seen[b] == NEVER


def shuffled(frames: list[Frame], bound_ms: int, seed: int) -> list[Frame]:
    """Each frame delayed by up to `bound_ms`: none overtakes one more than `bound_ms` older."""
    rng = random.Random(seed)
    return [f for _, _, f in sorted((f.ts + rng.randrange(bound_ms + 1), k, f) for k, f in enumerate(frames))]


def hazards(events) -> list[tuple]:
    return [(h.hazard_id, h.event, h.kind, h.sensor_id, h.ts) for h in events]


def test_shuffled_input_through_the_buffer_gives_the_sorted_result(mini_registry):
    values = [1, 12, 28, 52, 53, 30, 3, 27, 55, 20, 2, 1, 60, 61, 24, 1]
    frames = [frame("site-a", t, a_gas1=v, a_temp1=20 + 3 * v) for t, v in enumerate(values)]
    sorted_engine = RuleEngine(mini_registry)
    want = hazards(run(sorted_engine, *frames).hazards)
    assert want
    mixed = shuffled(frames, 3000, seed=4)
    assert mixed != frames

    # As they arrive, one frame a batch, with no hold: out-of-order frames are skipped, not evaluated.
    plain = RuleEngine(mini_registry)
    got_plain = [h for f in mixed for h in hazards(run(plain, f).hazards)]
    assert got_plain != want

    # Through a buffer with a hold of the bound: exactly the sorted result.
    engine = RuleEngine(mini_registry)
    buf = buffer(engine)
    got = []
    for k, f in enumerate(mixed):
        push(engine, buf, f, offset=k)
        seen = buf.site_seen[engine.site_row["site-a"]]
        got += hazards(engine.process(buf.release(upto(engine, "site-a", (seen - T0 - 3000) / 1000))).hazards)
    got += hazards(engine.process(buf.release(upto(engine, "site-a", 1e6))).hazards)  # the site went quiet
    assert got == want and len(buf) == 0
