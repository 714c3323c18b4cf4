"""The rule catalogue: the shipped files against the shipped registry, and errors naming file, line and field."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from config.topics import SECTORS
from rules.catalog import (
    CATALOG_DIR,
    REF,
    Catalog,
    CatalogError,
    FaultRule,
    InterlockRule,
    OfflineRule,
    RateRule,
    StuckRule,
    ThresholdRule,
    load_catalog,
    parse_catalog_file,
    resolve,
)
from sensors.registry import load_registry

# The unit every sensor of a quantity must have where a rule writes a fixed number for it.
# A quantity measured in two units (ammonia: ppm and %LEL; steel CO: ppm and mg/m3) cannot
# be here: its rule must read the numbers from the registry (a rule cannot select by unit).
FIXED_NUMBER_UNITS = {
    "combustible_gas": "%LEL",
    "hydrogen_sulfide": "mg/m3",
    "chlorine": "mg/m3",
    "hydrogen_chloride": "mg/m3",
    "benzene": "mg/m3",
    "nitrogen_dioxide": "mg/m3",
    "carbon_monoxide": "ppm",  # mine only (underground); the steel rule uses the registry
    "oxygen": "%vol",
    "rainfall_1h": "mm/h",
    "rainfall_24h": "mm/24h",
}
# Catalogued ahead of any shipped sensor (GB 39496 names the item; no pond measures it yet).
NOT_YET_MEASURED = {"mine.tailings_landslide"}
# Trigger sensors with no response signal in their interlock's scope, and why.
NO_RESPONSE_EXPECTED = {
    "am-qd-cs01-cr3-nh3-01": "cold room: GB 50072 §7.4.3 asks for exhaust in machine rooms and valve stations"
}
# Hazard kinds the engine emits besides threshold level kinds (rules/bindings.py).
RATE_KINDS = {"rate_rise", "rate_fall"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def rules_for(catalog, registry, sensor, kind=None):
    """The rules of the sensor's sector that match it, optionally of one class."""
    site_kind = registry.sites[sensor.site_id].kind
    return [
        r
        for r in catalog.rules(sensor.sector)
        if r.match.applies(sensor.quantity, site_kind) and (kind is None or isinstance(r, kind))
    ]


def matched_sensors(registry, sector, rule):
    return [
        s
        for s in registry.sensors.values()
        if s.sector == sector and rule.match.applies(s.quantity, registry.sites[s.site_id].kind)
    ]


def set_points(level):
    return [v for v in (level.above, level.below, level.clear) if v is not None]


def unit_mismatches(catalog, registry, units=FIXED_NUMBER_UNITS) -> list[str]:
    """Threshold rules writing a fixed number that match a sensor not in the expected unit."""
    problems = []
    for sector, f in catalog.sectors.items():
        for rule in f.rules:
            if not isinstance(rule, ThresholdRule):
                continue
            if not any(isinstance(v, (int, float)) for lv in rule.levels for v in set_points(lv)):
                continue
            for s in matched_sensors(registry, sector, rule):
                expected = units.get(s.quantity)
                if s.unit != expected:
                    problems.append(f"{rule.id}: fixed number on {s.id} in {s.unit} (expected {expected})")
    return problems


# --- the shipped catalogue ----------------------------------------------------------------


def test_shipped_catalogue_loads_with_all_sectors(catalog):
    assert set(catalog.sectors) == set(SECTORS)
    for sector, source in catalog.sources.items():
        assert source == str(CATALOG_DIR / f"{sector}.yaml")


def test_rule_ids_are_unique_and_prefixed(catalog):
    ids = [(sector, r.id) for sector, f in catalog.sectors.items() for r in f.rules]
    assert len({rid for _, rid in ids}) == len(ids)
    assert all(rid.startswith(sector + ".") for sector, rid in ids)


def test_every_measurement_has_exactly_one_threshold_rule(catalog, registry):
    # The binder uses the first matching threshold rule; a second one would be silently ignored.
    for s in registry.sensors.values():
        found = [r.id for r in rules_for(catalog, registry, s, ThresholdRule)]
        if s.is_state:
            assert found == [], f"{s.id} is a state signal, yet matched by {found}"
        else:
            assert len(found) == 1, f"{s.id} ({s.quantity}) matched by threshold rules {found}"


def test_every_sensor_has_its_sectors_offline_and_fault_rule(catalog, registry):
    for s in registry.sensors.values():
        for kind, name in ((OfflineRule, "offline"), (FaultRule, "fault")):
            found = rules_for(catalog, registry, s, kind)
            assert [r.id for r in found] == [f"{s.sector}.{name}"], s.id


def test_offline_and_fault_rules_cover_everything_with_the_agreed_colours(catalog):
    for sector, f in catalog.sectors.items():
        offline = [r for r in f.rules if isinstance(r, OfflineRule)]
        fault = [r for r in f.rules if isinstance(r, FaultRule)]
        assert len(offline) == 1 and len(fault) == 1, sector
        assert offline[0].match.quantity == "*" and fault[0].match.quantity == "*"
        assert (offline[0].colour, offline[0].site_colour, fault[0].colour) == ("blue", "yellow", "blue")


def test_rate_and_stuck_rules_are_unambiguous_and_skip_state_signals(catalog, registry):
    for s in registry.sensors.values():
        for kind in (RateRule, StuckRule):
            found = [r.id for r in rules_for(catalog, registry, s, kind)]
            assert len(found) <= 1, f"{s.id}: {found}"
            assert not (s.is_state and found), f"state signal {s.id} matched by {found}"


def test_stuck_rules_leave_out_signals_that_sit_flat(catalog):
    # Rainfall is 0 for days; gas detectors read a flat 0 in clean air (zero suppression).
    flat = {
        "rainfall_1h",
        "rainfall_24h",
        "combustible_gas",
        "hydrogen_sulfide",
        "chlorine",
        "hydrogen_chloride",
        "benzene",
        "carbon_monoxide",
        "nitrogen_dioxide",
        "ammonia",
        "airlock_current",
    }
    stuck = [r for f in catalog.sectors.values() for r in f.rules if isinstance(r, StuckRule)]
    assert stuck, "no stuck rule in the catalogue"
    for r in stuck:
        assert r.match.quantity != "*" and not flat & set(r.match.quantity), r.id


def test_every_rule_matches_a_shipped_sensor(catalog, registry):
    # Catches a misspelt quantity or site kind, which would leave a rule silently unused.
    unmatched = {
        r.id for sector, f in catalog.sectors.items() for r in f.rules if not matched_sensors(registry, sector, r)
    }
    assert unmatched == NOT_YET_MEASURED


def test_no_dead_registry_references(catalog, registry):
    checked = 0
    for sector, f in catalog.sectors.items():
        for rule in f.rules:
            if not isinstance(rule, ThresholdRule):
                continue
            sensors = matched_sensors(registry, sector, rule)
            if not sensors:
                continue
            for n, lv in enumerate(rule.levels):
                for ref in (v for v in set_points(lv) if isinstance(v, str)):
                    assert any(resolve(ref, s.alarms) is not None for s in sensors), (
                        f"{rule.id} levels[{n}] {ref!r}: no matched sensor has that set point"
                    )
                    checked += 1
    assert checked, "no registry reference was checked"


def test_every_matched_sensor_gets_at_least_one_level(catalog, registry):
    for s in registry.sensors.values():
        for rule in rules_for(catalog, registry, s, ThresholdRule):
            got = [lv.kind for lv in rule.levels if resolve(lv.above if lv.above is not None else lv.below, s.alarms)]
            assert got, f"{rule.id} has no level that resolves for {s.id}"


def test_fixed_numbers_are_in_the_sensors_unit(catalog, registry):
    assert unit_mismatches(catalog, registry) == []


def test_unit_check_catches_a_fixed_number_on_a_two_unit_quantity(catalog, registry):
    text = textwrap.dedent("""\
        sector: ammonia
        flapping: {max_changes: 5, window_s: 600}
        rules:
          - id: ammonia.nh3
            kind: threshold
            description: {zh: 氨, en: ammonia}
            standard: GB 50072-2021
            match: {quantity: [ammonia]}
            levels: [{kind: high, above: 150, colour: yellow}]
        """)
    parsed, issues = parse_catalog_file(text, "ammonia.yaml")
    assert not issues
    bad = Catalog(sectors={**catalog.sectors, "ammonia": parsed}, sources=catalog.sources)
    # Even with ammonia declared as ppm, the 150 would also apply to the %LEL detectors.
    found = unit_mismatches(bad, registry, {**FIXED_NUMBER_UNITS, "ammonia": "ppm"})
    assert found == [
        f"ammonia.nh3: fixed number on {sid} in %LEL (expected ppm)"
        for sid in ("am-qd-mr01-mr-nh3lel01", "am-dt-mr01-mr-nh3lel01")
    ]


def test_fixed_numbers_agree_with_the_registry(catalog, registry):
    # Where both give an H/HH/L/LL value, the operator must not see two different numbers.
    compared = 0
    for s in registry.sensors.values():
        for rule in rules_for(catalog, registry, s, ThresholdRule):
            for lv in rule.levels:
                value = lv.above if lv.above is not None else lv.below
                registered = getattr(s.alarms, lv.kind, None)
                if isinstance(value, (int, float)) and registered is not None:
                    assert registered == value, f"{rule.id} {lv.kind} {value} but {s.id} registers {registered}"
                    compared += 1
    assert compared, "no fixed number had a registry value to agree with"


@pytest.mark.parametrize(
    ("rule_id", "expected"),
    [
        # GB 50072-2021 §7.4.1: 150 ppm first level, 25 %LEL second level.
        ("ammonia.nh3", {"ppm": {"high": 150.0}, "%LEL": {"high_high": 25.0}}),
        # GB 6222 workplace / short-entry limits: 24 / 160 ppm = 30 / 200 mg/m3.
        (
            "steel.carbon_monoxide",
            {"ppm": {"high": 24.0, "high_high": 160.0}, "mg/m3": {"high": 30.0, "high_high": 200.0}},
        ),
    ],
)
def test_standard_values_read_from_the_registry(catalog, registry, rule_id, expected):
    sector = rule_id.split(".")[0]
    rule = next(r for r in catalog.rules(sector) if r.id == rule_id)
    sensors = matched_sensors(registry, sector, rule)
    assert {s.unit for s in sensors} == set(expected)
    for s in sensors:
        got = {lv.kind: resolve(lv.above, s.alarms) for lv in rule.levels if resolve(lv.above, s.alarms) is not None}
        assert got == expected[s.unit], s.id


def test_gas_alarm_levels(catalog):
    for sector in ("hazchem", "dust"):
        rule = next(r for r in catalog.rules(sector) if r.id == f"{sector}.combustible_gas")
        assert [(lv.kind, lv.above, lv.clear, lv.colour) for lv in rule.levels] == [
            ("high", 25, 20, "yellow"),
            ("high_high", 50, 45, "orange"),
        ]
        assert 3 <= rule.on_delay_s <= 5 and 10 <= rule.off_delay_s <= 30


def test_tailings_rules_follow_gb_39496(catalog):
    mine = catalog.sectors["mine"]
    assert (mine.aggregation.blue, mine.aggregation.yellow, mine.aggregation.orange) == (4, 3, 2)
    assert all(catalog.sectors[s].aggregation is None for s in SECTORS if s != "mine")
    rules = {r.id: r for r in mine.rules}
    phreatic = {lv.colour: lv.below for lv in rules["mine.tailings_phreatic"].levels}
    assert phreatic == {"orange": "1.1 * registry.low_low", "red": "registry.low_low"}
    landslide = {lv.colour: lv.above for lv in rules["mine.tailings_landslide"].levels}
    assert landslide == {"orange": "0.8 * registry.high_high", "red": "registry.high_high"}
    yellow = {
        rid: next(lv.above for lv in rules[rid].levels if lv.colour == "yellow")
        for rid in ("mine.rainfall_1h", "mine.rainfall_24h")
    }
    assert yellow == {"mine.rainfall_1h": 16, "mine.rainfall_24h": 50}  # 暴雨, docs/standards.md §3.4


def test_interlock_triggers_name_kinds_the_engine_emits(catalog, registry):
    interlocks = [(sector, r) for sector, f in catalog.sectors.items() for r in f.rules if isinstance(r, InterlockRule)]
    assert interlocks, "no interlock rule in the catalogue"
    for sector, rule in interlocks:
        assert set(rule.trigger.quantity) <= set(rule.match.quantity), rule.id
        emitted = set(RATE_KINDS)
        for s in matched_sensors(registry, sector, rule):
            for thr in rules_for(catalog, registry, s, ThresholdRule):
                emitted |= {lv.kind for lv in thr.levels}
        assert set(rule.trigger.kinds) <= emitted, f"{rule.id}: {rule.trigger.kinds} not in {sorted(emitted)}"


def test_every_interlock_trigger_has_a_response_signal_in_scope(catalog, registry):
    missing = {}
    for sector, f in catalog.sectors.items():
        for rule in (r for r in f.rules if isinstance(r, InterlockRule)):
            for s in matched_sensors(registry, sector, rule):
                if s.quantity not in rule.trigger.quantity:
                    continue
                peers = registry.sensors_of_site(s.site_id)
                responses = [
                    p
                    for p in peers
                    if p.quantity in rule.expect.quantity and (rule.scope == "site" or p.area == s.area)
                ]
                assert all(p.is_state for p in responses), rule.id
                if not responses:
                    missing[s.id] = rule.id
    assert set(missing) == set(NO_RESPONSE_EXPECTED), missing


def test_every_state_signal_is_expected_by_an_interlock(catalog, registry):
    states = [s for s in registry.sensors.values() if s.is_state]
    assert states, "the shipped registry has no state signal"
    for s in states:
        assert s.normal == 0, s.id
        rules = [r for r in catalog.rules(s.sector) if isinstance(r, InterlockRule) and s.quantity in r.expect.quantity]
        assert rules, f"state signal {s.id} is not expected by any interlock rule"
        peers = registry.sensors_of_site(s.site_id)
        assert any(
            p.quantity in r.trigger.quantity and (r.scope == "site" or p.area == s.area) for r in rules for p in peers
        ), f"{s.id}: no trigger sensor in its area"


def test_shipped_rule_files_check_clean_from_the_command_line():
    out = _cli(str(CATALOG_DIR))
    assert out.returncode == 0, out.stderr
    assert "ok — " in out.stdout and "6 sector files" in out.stdout


# --- errors name file, line and field -----------------------------------------------------

GOOD = textwrap.dedent("""\
    # Test catalogue: the header comment moves `sector` off line 1, as in the shipped files.
    sector: hazchem
    flapping: {max_changes: 5, window_s: 600}
    rules:
      - id: hazchem.offline
        kind: offline
        description: {zh: 离线, en: offline}
        standard: configurable
        match: {quantity: "*"}
        periods: 3
        colour: blue
        site_colour: yellow
      - id: hazchem.fault
        kind: fault
        description: {zh: 故障, en: fault}
        standard: instrument
        match: {quantity: "*"}
        colour: blue
      - id: hazchem.tank_level
        kind: threshold
        description: {zh: 液位, en: level}
        standard: design data (per installation), read from the registry
        match: {quantity: [level], site_kind: [tank_area]}
        levels:
          - {kind: high, above: registry.high, colour: yellow}
          - {kind: low_low, below: registry.low_low, colour: orange}
        on_delay_s: 5
        off_delay_s: 30
    """)


def line_of(text, needle, nth=0):
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth]


def errors_of(tmp_path, text, name="hazchem.yaml") -> tuple[str, CatalogError]:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    return str(tmp_path / name), info.value


def assert_issue(exc, path, line, field, message):
    """One line of the error reads `path:line: field: message`."""
    prefix = f"{path}:{line}: {field}: " if field else f"{path}:{line}: "
    matching = [s for s in str(exc).splitlines() if s.startswith(prefix)]
    assert matching, f"no error starting {prefix!r} in:\n{exc}"
    assert any(re.search(message, s) for s in matching), f"{message!r} not in {matching}"


def test_good_file_loads(tmp_path):
    (tmp_path / "hazchem.yaml").write_text(GOOD, encoding="utf-8")
    assert [r.id for r in load_catalog(tmp_path).rules("hazchem")] == [
        "hazchem.offline",
        "hazchem.fault",
        "hazchem.tank_level",
    ]


def test_unknown_key_in_a_rule(tmp_path):
    text = GOOD.replace("on_delay_s: 5", "thresold: 5")
    path, exc = errors_of(tmp_path, text)
    assert_issue(exc, path, line_of(text, "thresold"), "rules[2].thresold", "unknown key 'thresold'")


def test_bad_set_point_reference(tmp_path):
    text = GOOD.replace("above: registry.high,", "above: registry.hihg,")
    path, exc = errors_of(tmp_path, text)
    assert_issue(
        exc,
        path,
        line_of(text, "registry.hihg"),
        "rules[2].levels[0].above",
        r"'registry.hihg' is neither a number nor `registry.<high\|high_high\|low\|low_low>`",
    )


def test_level_with_both_above_and_below(tmp_path):
    text = GOOD.replace("below: registry.low_low,", "above: 3, below: registry.low_low,")
    path, exc = errors_of(tmp_path, text)
    assert_issue(exc, path, line_of(text, "above: 3, below"), "rules[2].levels[1]", "exactly one of `above` or `below`")


def test_duplicate_rule_id(tmp_path):
    text = GOOD.replace("- id: hazchem.fault", "- id: hazchem.offline")
    path, exc = errors_of(tmp_path, text)
    assert_issue(
        exc, path, line_of(text, "- id: hazchem.offline", nth=1), "rules[1].id", "duplicate rule id 'hazchem.offline'"
    )


def test_rule_id_must_start_with_the_sector(tmp_path):
    text = GOOD.replace("- id: hazchem.tank_level", "- id: mine.tank_level")
    path, exc = errors_of(tmp_path, text)
    assert_issue(exc, path, line_of(text, "mine.tank_level"), "rules[2].id", "must start with the sector id 'hazchem'")


def test_file_named_differently_from_its_sector(tmp_path):
    path, exc = errors_of(tmp_path, GOOD, name="mine.yaml")
    assert_issue(exc, path, line_of(GOOD, "sector: hazchem"), "sector", "holds sector 'hazchem'; name it hazchem.yaml")


def test_invalid_yaml(tmp_path):
    text = GOOD.replace(
        "match: {quantity: [level], site_kind: [tank_area]}", "match: {quantity: [level], site_kind: [tank_area}"
    )
    path, exc = errors_of(tmp_path, text)
    assert re.search(rf"^{re.escape(path)}:\d+: not valid YAML", str(exc), re.M), str(exc)


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("kind: fault", "kind: fautl", "rules[1]", "does not match any of the expected tags"),
        ("    standard: instrument\n", "", "rules[1].standard", "required field is missing"),
        ("kind: low_low,", "kind: high,", "rules[2]", "level kinds must be distinct"),
        ("periods: 3", "periods: 1", "rules[0].periods", "greater than 1"),
        ("site_colour: yellow", "site_colour: purple", "rules[0].site_colour", "'red', 'orange', 'yellow' or 'blue'"),
        ("sector: hazchem", "sector: coal", "sector", "'hazchem', 'mine'"),
    ],
)
def test_other_schema_errors(tmp_path, old, new, field, message):
    assert old in GOOD
    text = GOOD.replace(old, new)
    path, exc = errors_of(tmp_path, text)
    assert any(
        s.startswith(f"{path}:") and f": {field}: " in s and re.search(message, s) for s in str(exc).splitlines()
    ), str(exc)


def test_all_problems_of_all_files_are_reported_at_once(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        GOOD.replace("sector: hazchem", "sector: mine")
        .replace("hazchem.", "mine.")
        .replace("on_delay_s: 5", "thresold: 5")
    )
    path, exc = errors_of(tmp_path, GOOD.replace("above: registry.high,", "above: registry.hihg,"))
    assert {(i.source.rsplit("/", 1)[-1], i.path) for i in exc.issues} == {
        ("hazchem.yaml", "rules[2].levels[0].above"),
        ("mine.yaml", "rules[2].thresold"),
    }
    assert all(i.line for i in exc.issues)


def test_command_line_check_fails_on_a_bad_directory(tmp_path):
    text = GOOD.replace("on_delay_s: 5", "thresold: 5")
    (tmp_path / "hazchem.yaml").write_text(text, encoding="utf-8")
    out = _cli(str(tmp_path))
    assert out.returncode != 0
    assert f"{tmp_path / 'hazchem.yaml'}:{line_of(text, 'thresold')}: rules[2].thresold: unknown key" in out.stderr


def _cli(directory: str) -> subprocess.CompletedProcess:
    # A wide console, so rich does not wrap the one-line errors.
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "safewatch", "rules", "check", directory],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_ref_pattern_accepts_only_the_documented_forms():
    assert all(REF.match(s) for s in ("registry.high", "1.1 * registry.low_low", "0.8*registry.high_high"))
    assert not any(REF.match(s) for s in ("registry.highh", "registry.high * 2", "-1 * registry.low", "high"))
