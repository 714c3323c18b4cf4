"""`safewatch replay`: deterministic, event-time ordered, independent of batch size."""

from __future__ import annotations

import orjson

from rules.replay import replay_file
from sensors.schema import encode

from .rules_helpers import T0, frame


def write_script(path, frames, extra_lines=()):
    with open(path, "wb") as fh:
        for f in frames:
            fh.write(encode(f) + b"\n")
        for line in extra_lines:
            fh.write(line + b"\n")


SCRIPT = [
    frame("site-a", t, a_gas1=g, a_temp1=tc)
    for t, g, tc in [(0, 1, 20), (1, 12, 25), (2, 28, 40), (3, 52, 62), (4, 53, 66), (5, 30, 50), (6, 3, 30)]
]


def test_replay_is_deterministic_and_ordered(tmp_path, mini_registry):
    src = tmp_path / "in.jsonl"
    # written out of order: replay sorts by event time
    write_script(src, list(reversed(SCRIPT)))
    outs = []
    for batch_size in (1, 3, 1000):
        out = tmp_path / f"out{batch_size}.jsonl"
        report = replay_file(src, mini_registry, out, batch_size=batch_size)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    # Sorted by event time, the reversed file gives exactly what the file in order gives.
    in_order = tmp_path / "in-order.jsonl"
    write_script(in_order, SCRIPT)
    replay_file(in_order, mini_registry, tmp_path / "out-in-order.jsonl")
    assert (tmp_path / "out-in-order.jsonl").read_bytes() == outs[0]
    events = [orjson.loads(line) for line in outs[0].splitlines()]
    times = [e["ts"] if e["type"] == "hazard" else e["updated_at"] for e in events]
    assert times == sorted(times) and times[0] == T0 + 2000  # the first crossing, 28 %LEL at t = 2 s
    hazards = [(e["event"], e["sensor_id"], e["kind"]) for e in events if e["type"] == "hazard"]
    assert ("open", "a-gas1", "high_high") in hazards and ("clear", "a-temp1", "high") in hazards
    incidents = [e for e in events if e["type"] == "incident"]
    assert incidents[0]["status"] == "open"
    # All clear at the end; it resolves only after the quiet period, which this short file never reaches.
    assert incidents[-1]["status"] == "update" and incidents[-1]["open_hazard_ids"] == []
    assert report.readings == 14 and not report.refused


def test_replay_reports_bad_lines_by_number(tmp_path, mini_registry):
    src = tmp_path / "in.jsonl"
    write_script(src, SCRIPT[:2], extra_lines=[b"{oops", b'{"site_id": "site-a", "ts": 1, "readings": []}'])
    report = replay_file(src, mini_registry, tmp_path / "out.jsonl")
    assert report.refused["malformed_json"] == 1 and report.refused["invalid_field"] == 1
    assert any(e.startswith(f"{src}:3:") for e in report.errors)
    assert any(e.startswith(f"{src}:4:") and "readings" in e for e in report.errors)


def test_replay_reports_readings_the_engine_refuses_by_line(tmp_path, mini_registry):
    src = tmp_path / "in.jsonl"
    strangers = [
        b'{"site_id": "site-a", "ts": %d, "sensor_id": "nobody", "value": 1}' % (T0 + 9000),
        b'{"site_id": "site-a", "ts": %d, "sensor_id": "b-gas1", "value": 1}' % (T0 + 1500),
    ]
    write_script(src, SCRIPT, extra_lines=strangers)
    report = replay_file(src, mini_registry, tmp_path / "out.jsonl")
    assert report.refused == {"unknown_sensor": 1, "sensor_not_of_site": 1}
    # By line, although the engine met line 9 (ts +1.5 s) before line 8 (ts +9 s).
    assert report.errors[0].startswith(f"{src}:8: unknown_sensor: sensor_id 'nobody'")
    assert report.errors[1].startswith(f"{src}:9: sensor_not_of_site: sensor_id 'b-gas1' belongs to site 'site-b'")


def test_late_readings_fed_out_of_order_are_reported_by_line(mini_registry):
    from rules.engine import RuleEngine
    from rules.replay import ReplayReport, replay_messages
    from sensors.schema import Reading

    engine = RuleEngine(mini_registry, None, lateness_s=60.0)
    report = ReplayReport()
    late = Reading(site_id="site-a", ts=T0, sensor_id="a-gas1", value=1.0)
    pairs = [(1, SCRIPT[0].model_copy(update={"ts": T0 + 120_000})), (2, late)]
    list(replay_messages(pairs, engine, report, batch_size=1, source="x.jsonl"))
    assert report.refused == {"late": 1}
    assert report.errors == [
        f"x.jsonl:2: late: sensor_id 'a-gas1' at ts {T0} is more than 60 s behind that sensor's newest reading"
    ]


def test_every_refused_line_is_reported_as_file_line_reason(tmp_path, mini_registry):
    # Every reason replay can refuse a line for; `late` (only for input fed unsorted) is the test
    # above, and `future` / `empty_message` need a wall clock or a Kafka record, which a file has not.
    t = T0 + 3000
    refused = [
        (b"{oops", "malformed_json"),
        (b"[1, 2]", "malformed_message"),
        (b'{"site_id": "site-a", "sensor_id": "a-gas1", "value": 1}', "invalid_field: ts: Field required"),
        (
            b'{"site_id": "site-a", "ts": %d, "readings": [{"sensor_id": "a-gas1", "value": "1"},'
            b' {"sensor_id": "a-temp1", "value": 21}]}' % t,
            "invalid_field: readings.0.value:",  # the bad reading; a-temp1 beside it is kept, as in the worker
        ),
        (b'{"site_id": "site-a", "ts": %d, "sensor_id": "nobody", "value": 1}' % t, "unknown_sensor"),
        (b'{"site_id": "site-a", "ts": %d, "sensor_id": "b-gas1", "value": 1}' % t, "sensor_not_of_site"),
    ]
    src = tmp_path / "in.jsonl"
    write_script(src, SCRIPT[:2], extra_lines=[line for line, _ in refused])
    report = replay_file(src, mini_registry, tmp_path / "out.jsonl")
    assert len(report.errors) == len(refused)
    for n, (error, (_, reason)) in enumerate(zip(report.errors, refused, strict=True), start=3):
        assert error.startswith(f"{src}:{n}: {reason}"), error
    assert report.refused == {
        "malformed_json": 1,
        "malformed_message": 1,
        "invalid_field": 2,
        "unknown_sensor": 1,
        "sensor_not_of_site": 1,
    }
    assert report.readings == 2 * 2 + 1  # the two frames of SCRIPT and the salvaged a-temp1
