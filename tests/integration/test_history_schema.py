"""docs/influx-schema.md against what a real run wrote to the real InfluxDB."""

from __future__ import annotations

import re
from pathlib import Path

from history.retention import ROLLUP_1M, backfill
from streams.influx import query

DOC = Path(__file__).resolve().parents[2] / "docs" / "influx-schema.md"
TYPES = {"float": "float", "integer": "integer", "string": "string"}


def documented() -> dict[str, dict[str, tuple[str, str, str]]]:
    """measurement → name → (kind, type, when), from the doc's tables."""
    out: dict[str, dict[str, tuple[str, str, str]]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        head = re.match(r"^## `(\w+)`", line)
        if head:
            current = out.setdefault(head.group(1), {})
        elif line.startswith("## Roll-ups"):
            current = out.setdefault("rollup", {})
        row = re.match(r"^\| `(\w+)` \| (tag|field) \| (\w+) \| (always|optional) \|", line)
        if row and current is not None:
            current[row.group(1)] = (row.group(2), row.group(3), row.group(4))
    return out


def _keys(settings, q: str) -> dict[str, str]:
    series = query(settings, q)
    return {v[0]: (v[1] if len(v) > 1 else "string") for s in series for v in s["values"]}


def test_the_schema_doc_matches_what_the_worker_wrote(leak_run):
    s = leak_run.settings
    doc = documented()
    measured = (
        "reading",
        "setpoint",
        "hazard",
        "incident",
        "incident_state",
        "notice",
        "enterprise_risk",
        "deadletter",
    )
    gateway = ("ingest_count", "ingest_sensor", "ingest_refusal", "ingest_skew")  # test_ingest_shared.py
    assert set(doc) == {*measured, *gateway, "rollup"}
    for m in measured:
        tags = set(_keys(s, f'SHOW TAG KEYS FROM "{m}"'))
        fields = _keys(s, f'SHOW FIELD KEYS FROM "{m}"')
        assert tags, f"the run wrote no {m}"
        want_tags = {n for n, (k, _, _) in doc[m].items() if k == "tag"}
        want_fields = {n: t for n, (k, t, _) in doc[m].items() if k == "field"}
        always = {n for n, (_, _, w) in doc[m].items() if w == "always"}
        assert tags <= want_tags, f"{m}: tags written but not documented: {tags - want_tags}"
        assert set(fields) <= set(want_fields), f"{m}: fields not documented: {set(fields) - set(want_fields)}"
        assert always & want_tags <= tags, f"{m}: documented always, never written: {(always & want_tags) - tags}"
        assert always & set(want_fields) <= set(fields), f"{m}: fields documented always, never written"
        for name, ftype in fields.items():
            assert TYPES[want_fields[name]] == ftype, f"{m}.{name} is {ftype}, documented {want_fields[name]}"


def test_the_rollup_fields_are_documented(leak_run):
    s = leak_run.settings
    backfill(s, leak_run.start_ms - 60_000, leak_run.start_ms + 600_000)
    fields = _keys(s, f'SHOW FIELD KEYS FROM "{s.influx_db}"."{ROLLUP_1M}"."reading"')
    want = {n: t for n, (k, t, _) in documented()["rollup"].items() if k == "field"}
    assert fields == want
    tags = set(_keys(s, f'SHOW TAG KEYS FROM "{s.influx_db}"."{ROLLUP_1M}"."reading"'))
    reading_tags = {n for n, (k, _, _) in documented()["reading"].items() if k == "tag"}
    assert {"sensor_id", "site_id", "enterprise_id", "region", "sector"} <= tags <= reading_tags
