"""Pure parts of the histories: time ranges, filters, resolution choice, exports, the data-class table."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config.settings import Settings
from history import classes
from history.export import render
from history.filters import FilterError, make_filters, where
from history.resolution import Resolution, choose
from history.retention import RAW, ROLLUP_1H, ROLLUP_1M, statements
from history.timefmt import RangeError, local, parse_range
from sensors.registry import load_registry

TZ = ZoneInfo("Asia/Shanghai")
NOW = 1_796_000_000_000
DAY = 86_400_000
DOC = Path(__file__).resolve().parents[2] / "docs" / "data-classes.md"


@pytest.fixture(scope="module")
def registry():
    return load_registry(Settings().registry)


def test_ranges_are_local_and_bad_ones_are_refused():
    start, end = parse_range("2026-12-01", "2026-12-02T08:00", TZ, NOW)
    assert local(start, TZ) == "2026-12-01T00:00:00+08:00" and local(end, TZ) == "2026-12-02T08:00:00+08:00"
    assert parse_range("7d", None, TZ, NOW) == (NOW - 7 * DAY, NOW)
    assert (
        parse_range("2026-12-01T00:00Z", "2026-12-01T01:00+00:00", TZ, NOW)[1]
        - parse_range("2026-12-01T00:00Z", "2026-12-01T01:00+00:00", TZ, NOW)[0]
        == 3_600_000
    )
    with pytest.raises(RangeError, match="empty range"):
        parse_range("1d", "2d", TZ, NOW)
    with pytest.raises(RangeError, match="bad time"):
        parse_range("last tuesday", None, TZ, NOW)
    with pytest.raises(RangeError, match="5 years"):
        parse_range("2000-01-01", None, TZ, NOW)


def test_filters_resolve_names_and_refuse_unknown_ids(registry):
    ent = next(iter(registry.enterprises.values()))
    f = make_filters(registry, 0, 1, enterprise=ent.name, region=ent.region[:4], level="red", rule="hazchem.gas")
    assert f.enterprise_id == ent.id and f.severity == "red"
    w = where(f)
    assert f"enterprise_id = '{ent.id}'" in w and f"region =~ /^{ent.region[:4]}/" in w and "severity = 'red'" in w
    assert "rule_id = 'hazchem.gas'" in w and "severity" not in where(f, fields=False)
    for kw, bad, msg in [
        ("site", "nope", "unknown site"),
        ("sensor", "nope", "unknown sensor"),
        ("region", "99", "no region"),
        ("region", "3x", "bad region"),
        ("sector", "oil", "unknown sector"),
        ("rule", "a'; DROP", "bad rule"),
        ("enterprise", "zzz-none", "unknown enterprise"),
    ]:
        with pytest.raises(FilterError, match=msg):
            make_filters(registry, 0, 1, **{kw: bad})


def test_the_resolution_fits_the_range():
    s = Settings()
    assert choose(s, NOW - 3_600_000, NOW, NOW, 600) == choose(s, NOW - 3_600_000, NOW, NOW, 600)
    assert choose(s, NOW - 3_600_000, NOW, NOW, 600).rp == RAW
    assert choose(s, NOW - DAY, NOW, NOW, 600) == Resolution(ROLLUP_1M, 180)
    assert choose(s, NOW - 7 * DAY, NOW, NOW, 600) == Resolution(ROLLUP_1H, 3600)  # 168 buckets, not 600
    assert choose(s, NOW - 30 * DAY, NOW, NOW, 600).rp == ROLLUP_1H
    old = choose(s, NOW - 40 * DAY, NOW - 40 * DAY + 3_600_000, NOW, 600)  # short but older than raw keeps
    assert old.rp == ROLLUP_1M and old.interval_s == 60
    assert choose(s, NOW - 500 * DAY, NOW - 499 * DAY, NOW, 600).rp == ROLLUP_1H
    assert choose(Settings(influx_rollups=False), NOW - 30 * DAY, NOW, NOW, 600).rp == RAW


def test_retention_statements_make_raw_the_default_and_create_both_cqs():
    text = "\n".join(statements(Settings(influx_raw_retention="45d")))
    assert 'CREATE RETENTION POLICY "raw" ON "safewatch" DURATION 45d REPLICATION 1 SHARD DURATION 1d DEFAULT' in text
    assert text.count("CREATE CONTINUOUS QUERY") == 2 and "GROUP BY time(1h), *" in text


def test_exports_carry_every_column():
    rows = [{"a": 1, "b": [1, 2]}, {"a": 2, "c": "x,y"}]
    got = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert got == [{"a": "1", "b": "[1,2]", "c": ""}, {"a": "2", "b": "", "c": "x,y"}]
    assert render(rows, "json").startswith("[")
    with pytest.raises(ValueError):
        render(rows, "xml")


def _doc_table() -> dict[str, tuple[str, set[str], bool]]:
    out = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `(\w+)` \| [^|]+ \| (general|important|core) \| ([^|]+) \| (yes|no) \|", line)
        if m:
            out[m.group(1)] = (m.group(2), set(re.findall(r"`(\w+)`", m.group(3))), m.group(4) == "yes")
    return out


def test_walk_the_data_class_table():
    """The doc's table and the code's agree, and every role is allowed or refused exactly as it says."""
    doc = _doc_table()
    assert set(doc) == set(classes.TABLE)
    for kind, c in classes.TABLE.items():
        grade, readers, exportable = doc[kind]
        assert (grade, readers, exportable) == (c.grade, set(c.readers), c.exportable), kind
        for role in ("admin", "duty_officer", "inspector", "enterprise"):
            if role in readers:
                assert classes.check(kind, role).kind == kind
                assert classes.must_audit(c, "read") == (grade != "general")
                assert classes.must_audit(c, "export")
            else:
                with pytest.raises(classes.Refused):
                    classes.check(kind, role)
        if not exportable:
            with pytest.raises(classes.Refused, match="never exported"):
                classes.check(kind, "admin", export=True)
    assert "enterprise" not in classes.TABLE["reporter_contacts"].readers
    # the console shows a report's contact only to the roles that decide on reports: the same set
    from alerts.console.routes import DECIDE

    assert set(classes.TABLE["reporter_contacts"].readers) == set(DECIDE)
    assert "enterprise" not in classes.TABLE["accidents"].readers
