"""The registry loader: the shipped file, the flat API, and errors naming file, line and field."""

import re
import textwrap

import pytest

from sensors import uscc
from sensors.registry import DEFAULT_DEADBAND_FRACTION, DEFAULT_REGISTRY, SECTORS, RegistryError, load_registry
from sensors.simulator import demo_leak_target, leak_sensor_ids

GOOD = textwrap.dedent(
    """\
    regions:
      - {code: "320500", name: 苏州市}
      - {code: "320506", name: 吴中区}
    enterprises:
      - id: "91110108551385082Q"
        name: Test Chemicals
        region: "320506"
        supervision_class: B
        sites:
          - id: t-tank01
            name: tank farm
            sector: hazchem
            kind: tank_area
            sensors:
              - id: t-tank01-gas01
                quantity: combustible_gas
                unit: "%LEL"
                range: [0, 100]
                alarms: {high: 25, high_high: 50}
                period_s: 2
                area: tank-T1
                normal: 0.5
              - id: t-tank01-temp01
                quantity: temperature
                unit: "°C"
                range: [-20, 100]
                alarms: {high: 35, high_high: 45}
                deadband: 1.0
                period_s: 5
                area: tank-T1
      - id: "91110000600037341L"
        name: Test Casting
        region: "320500"
        supervision_class: C
        sites:
          - id: t-pit01
            name: casting pit
            sector: casting
            kind: casting_pit
            sensors:
              - id: t-pit01-pin01
                quantity: cooling_water_inlet_pressure
                unit: MPa
                range: [0, 1.0]
                alarms: {low_low: 0.15, low: 0.2}
                period_s: 1
                area: mould
    """
)


@pytest.fixture(scope="module")
def shipped():
    return load_registry()


def write(tmp_path, text, name="registry.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text, needle, nth=0, exact=False):
    """1-based line number of the nth line containing `needle` (or, exact, being it once stripped)."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if (line.strip() == needle if exact else needle in line)]
    return hits[nth]


def add_after(text, needle, new_line):
    """Insert `new_line` after the line containing `needle`, at the same indentation."""
    out = []
    for line in text.splitlines(keepends=True):
        out.append(line)
        if needle in line:
            out.append(line[: len(line) - len(line.lstrip())] + new_line + "\n")
    return "".join(out)


def drop_line(text, needle):
    return "".join(line for line in text.splitlines(keepends=True) if needle not in line)


def errors_of(path):
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    return info.value


def assert_issue(exc, path, line, field, message):
    """One line of the error names file:line: field: message."""
    expected = f"{path}:{line}: {field}: "
    matching = [s for s in str(exc).splitlines() if s.startswith(expected)]
    assert matching, f"no error starting {expected!r} in:\n{exc}"
    assert any(re.search(message, s) for s in matching), f"{message!r} not in {matching}"


# --- the shipped registry ----------------------------------------------------------------


def test_shipped_registry_loads(shipped):
    assert shipped.source == str(DEFAULT_REGISTRY)
    assert shipped.sites and shipped.sensors


def test_shipped_covers_all_sectors_with_two_enterprises_each(shipped):
    for sector in SECTORS:
        sites = shipped.sites_by_sector(sector)
        assert sites, sector
        assert len({s.enterprise_id for s in sites}) >= 2, sector


def test_shipped_shape(shipped):
    for ent in shipped.enterprises.values():
        assert 1 <= len(ent.site_ids) <= 3, ent.id
        assert uscc.is_valid(ent.id)
        assert ent.id[2:8] == ent.region  # registered where it is located
        assert ent.region.startswith("32") and ent.region in shipped.regions
    for site in shipped.sites.values():
        assert 4 <= len(site.sensor_ids) <= 12, site.id
        assert site.region == shipped.enterprises[site.enterprise_id].region


def test_shipped_healthy_values_are_not_in_alarm_and_alarms_can_clear(shipped):
    for s in shipped.sensors.values():
        assert s.normal is not None, s.id
        if s.is_state:
            continue  # no set points: nothing to be in alarm of
        gap = min(abs(v - s.normal) for v in s.alarms.set_points().values())
        assert s.deadband_value < gap / 2, s.id


def test_shipped_standard_set_points(shipped):
    by_quantity = {}
    for s in shipped.sensors.values():
        by_quantity.setdefault((s.quantity, s.unit), set()).add(tuple(sorted(s.alarms.set_points().items())))
    assert by_quantity["combustible_gas", "%LEL"] == {(("high", 25.0), ("high_high", 50.0))}
    assert by_quantity["oxygen", "%vol"] == {(("high", 23.5), ("low", 19.5))}
    assert by_quantity["ammonia", "ppm"] == {(("high", 150.0),)}
    assert by_quantity["hydrogen_sulfide", "mg/m3"] == {(("high", 10.0), ("high_high", 20.0))}


def test_shipped_demo_leak_target(shipped):
    site_id, area = demo_leak_target(shipped)
    site = shipped.sites[site_id]
    assert site.sector == "hazchem" and site.kind == "tank_area" and "tank" in site_id
    gas, temp = leak_sensor_ids(shipped, site_id, area)
    assert gas and temp
    for ids, quantity in ((gas, "combustible_gas"), (temp, "temperature")):
        for sid in ids:
            s = shipped.sensors[sid]
            assert (s.site_id, s.area, s.quantity) == (site_id, area, quantity), sid


# --- the flat API --------------------------------------------------------------------------


def test_flat_api(tmp_path):
    reg = load_registry(write(tmp_path, GOOD))
    assert list(reg.regions) == ["320500", "320506"]
    assert list(reg.enterprises) == ["91110108551385082Q", "91110000600037341L"]
    assert list(reg.sites) == ["t-tank01", "t-pit01"]
    assert list(reg.sensors) == ["t-tank01-gas01", "t-tank01-temp01", "t-pit01-pin01"]
    site = reg.sites["t-tank01"]
    assert (site.enterprise_id, site.sector, site.region) == ("91110108551385082Q", "hazchem", "320506")
    gas = reg.sensors["t-tank01-gas01"]
    assert gas.site_id == "t-tank01" and gas.sector == "hazchem" and gas.region == "320506"
    assert gas.range == (0.0, 100.0)
    assert (gas.alarms.high, gas.alarms.high_high, gas.alarms.low, gas.alarms.low_low) == (25.0, 50.0, None, None)
    assert gas.deadband is None and gas.deadband_value == pytest.approx(DEFAULT_DEADBAND_FRACTION * 100)
    assert reg.sensors["t-tank01-temp01"].deadband_value == 1.0
    assert [s.id for s in reg.sensors_of_site("t-tank01")] == ["t-tank01-gas01", "t-tank01-temp01"]
    assert [s.id for s in reg.sites_by_sector("casting")] == ["t-pit01"]
    assert reg.sites_by_sector("mine") == []
    assert reg.enterprises["91110108551385082Q"].sectors == ("hazchem",)
    assert reg.site_sectors() == {"t-tank01": "hazchem", "t-pit01": "casting"}
    with pytest.raises(ValueError, match="unknown sector"):
        reg.sites_by_sector("coal")
    with pytest.raises(KeyError):
        reg.sensors_of_site("nope")


def test_unquoted_all_digit_codes_are_read_as_codes(tmp_path):
    text = GOOD.replace('{code: "320506"', "{code: 320506").replace('region: "320506"', "region: 320506")
    reg = load_registry(write(tmp_path, text))
    assert reg.sites["t-tank01"].region == "320506"


# --- errors ------------------------------------------------------------------------------


def test_bad_credit_code(tmp_path):
    text = GOOD.replace("91110108551385082Q", "91110108551385082R")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(exc, path, line_of(text, "91110108551385082R"), "enterprises[0].id", "expected Q got R")


def test_unknown_unit(tmp_path):
    text = GOOD.replace('unit: "%LEL"', 'unit: "ppmm"')
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(
        exc,
        path,
        line_of(text, "ppmm"),
        "enterprises[0].sites[0].sensors[0].unit",
        r"unknown unit 'ppmm' \(known: .*%LEL",
    )


def test_missing_set_points(tmp_path):
    text = GOOD.replace("alarms: {high: 25, high_high: 50}", "alarms: {}")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(
        exc, path, line_of(text, "alarms: {}"), "enterprises[0].sites[0].sensors[0].alarms", "at least one set point"
    )


def test_missing_alarms_key_points_at_the_sensor(tmp_path):
    text = drop_line(GOOD, "alarms: {low_low: 0.15, low: 0.2}")
    path = write(tmp_path, text)
    exc = errors_of(path)
    line = line_of(text, "- id: t-pit01-pin01")
    assert_issue(exc, path, line, "enterprises[1].sites[0].sensors[0].alarms", "required")


STATE = """\
          - id: t-pit01-shutoff01
            quantity: shutoff_valve_closed
            unit: bool
            range: [0, 1]
            period_s: 1
            area: mould
            normal: 0
"""  # appended to GOOD: a second sensor of the casting pit


def test_state_signal_needs_no_set_points(tmp_path):
    reg = load_registry(write(tmp_path, GOOD + STATE))
    valve = reg.sensors["t-pit01-shutoff01"]
    assert valve.is_state and not reg.sensors["t-pit01-pin01"].is_state
    assert valve.alarms.set_points() == {} and valve.alarms.high is None  # empty, never None


def test_missing_alarms_message_names_the_state_signal_exception(tmp_path):
    text = drop_line(GOOD, "alarms: {low_low: 0.15, low: 0.2}")
    exc = errors_of(write(tmp_path, text))
    assert "only state signals, unit bool, may have none" in str(exc)


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("range: [0, 1]", "range: [0, 2]", "range", r"state signal \(unit bool\) has range \[0, 1\], got \[0, 2\]"),
        ("normal: 0\n", "normal: 0.7\n", "normal", "normal 0.7 of a state signal must be 0 or 1"),
    ],
)
def test_bad_state_signal(tmp_path, old, new, field, message):
    text = GOOD + STATE.replace(old, new)
    path = write(tmp_path, text)
    exc = errors_of(path)
    line = line_of(text, new.strip())
    assert_issue(exc, path, line, f"enterprises[1].sites[0].sensors[1].{field}", message)


def test_unordered_set_points(tmp_path):
    text = GOOD.replace("alarms: {low_low: 0.15, low: 0.2}", "alarms: {low_low: 0.25, low: 0.2}")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(
        exc,
        path,
        line_of(text, "low_low: 0.25"),
        "enterprises[1].sites[0].sensors[0].alarms",
        "out of order: low_low 0.25 must be below low 0.2",
    )


def test_set_point_outside_range(tmp_path):
    text = GOOD.replace("alarms: {high: 35, high_high: 45}", "alarms: {high: 35, high_high: 145}")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(
        exc,
        path,
        line_of(text, "high_high: 145"),
        "enterprises[0].sites[0].sensors[1].alarms",
        "outside the measuring range",
    )


def test_duplicate_sensor_id(tmp_path):
    text = GOOD.replace("- id: t-tank01-temp01", "- id: t-tank01-gas01")
    path = write(tmp_path, text)
    exc = errors_of(path)
    line = line_of(text, "- id: t-tank01-gas01", nth=1)
    assert_issue(
        exc,
        path,
        line,
        "enterprises[0].sites[0].sensors[1].id",
        "duplicate sensor id 't-tank01-gas01' .first at enterprises.0..sites.0..sensors.0..id",
    )


def test_duplicate_site_id_across_enterprises(tmp_path):
    text = GOOD.replace("- id: t-pit01\n", "- id: t-tank01\n")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(
        exc, path, line_of(text, "- id: t-tank01", nth=1, exact=True), "enterprises[1].sites[0].id", "duplicate site id"
    )


def test_undeclared_region(tmp_path):
    text = GOOD.replace('region: "320500"', 'region: "320583"')
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(exc, path, line_of(text, '"320583"'), "enterprises[1].region", "'320583' is not declared")


def test_unknown_key(tmp_path):
    text = add_after(GOOD, "kind: casting_pit", "colour: red")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(exc, path, line_of(text, "colour: red"), "enterprises[1].sites[0].colour", "unknown key 'colour'")


def test_duplicate_yaml_key(tmp_path):
    text = add_after(GOOD, "period_s: 1", "period_s: 2")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert_issue(
        exc, path, line_of(text, "period_s: 1") + 1, r"enterprises[1].sites[0].sensors[0].period_s", "duplicate key"
    )


def test_all_errors_are_reported_at_once(tmp_path):
    text = (
        GOOD.replace("91110108551385082Q", "91110108551385082R")
        .replace('unit: "%LEL"', 'unit: "ppmm"')
        .replace("sector: casting", "sector: foundry")
        .replace("period_s: 5", "period_s: 0")
        .replace("- id: t-tank01-temp01", "- id: t-tank01-gas01")
    )
    path = write(tmp_path, text)
    exc = errors_of(path)
    fields = [i.path for i in exc.issues]
    assert fields == [
        "enterprises[0].id",
        "enterprises[0].sites[0].sensors[0].unit",
        "enterprises[0].sites[0].sensors[1].id",
        "enterprises[0].sites[0].sensors[1].period_s",
        "enterprises[1].sites[0].sector",
    ]
    assert str(exc).splitlines()[0] == f"5 errors in {path}:"
    assert all(i.source == str(path) and i.line for i in exc.issues)


def test_yaml_syntax_error(tmp_path):
    text = GOOD.replace("range: [0, 100]", "range: [0, 100")
    path = write(tmp_path, text)
    exc = errors_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+: not valid YAML", str(exc))


def test_missing_file(tmp_path):
    exc = errors_of(tmp_path / "nope.yaml")
    assert str(exc).startswith(f"{tmp_path / 'nope.yaml'}: cannot read")


def test_not_a_mapping(tmp_path):
    path = write(tmp_path, "- just\n- a list\n")
    assert "expected a mapping" in str(errors_of(path))
