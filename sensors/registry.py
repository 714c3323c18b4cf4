"""The registry of regions, enterprises, sites and sensors: YAML in, flat lookup tables out.

Authors write a nested file (enterprise → sites → sensors); the rest of the code uses the
flat `Registry`. Every problem in the file is reported at once, each with file, line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from config.topics import SECTORS, Sector
from sensors import uscc

from .yamlsource import Issue, Loc, dotted, issue_from_pydantic, line_of, read_yaml

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "data" / "registry.yaml"


# One spelling per unit: readings, rules and InfluxDB tags compare them as plain strings.
UNITS = (
    "%LEL",
    "LEL.m",
    "%vol",
    "ppm",
    "mg/m3",  # gas concentration
    "°C",
    "Pa",
    "kPa",
    "MPa",  # temperature, pressure
    "m",
    "mm",
    "%",  # level, length, displacement, fill
    "mm/h",
    "mm/24h",
    "mm/d",  # rainfall, displacement rate
    "m3/h",
    "L/min",
    "m/s",  # flow, air velocity
    "A",
    "kW",
    "Hz",
    "count",  # drives, spark counters
    "bool",  # state signals: 0 / 1 (fan running, valve closed...)
)
# A sensor in this unit reports a state, not a measurement: range [0, 1], no set points needed
# (it is what an interlock rule expects to change, not a value that alarms by itself).
STATE_UNIT = "bool"
# The deadband when a sensor does not set one: this fraction of its measuring span.
DEFAULT_DEADBAND_FRACTION = 0.02
SET_POINT_ORDER = ("low_low", "low", "high", "high_high")

_IDENT = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
_NAME = r"^[a-z][a-z0-9_]*$"


def _int_to_str(value: Any) -> Any:
    """YAML reads an unquoted all-digit code as an int; codes never start with 0, so str() is exact."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=_IDENT)]
RegionCode = Annotated[str, BeforeValidator(_int_to_str), Field(pattern=r"^[1-9]\d{5}$")]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


def default_deadband(lo: float, hi: float) -> float:
    """The deadband of a sensor that sets none."""
    return DEFAULT_DEADBAND_FRACTION * (hi - lo)


class RegistryModel(BaseModel):
    """Frozen, strict about unknown keys: a typo in the file is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Region(RegistryModel):
    """A GB/T 2260 administrative division."""

    code: RegionCode
    name: Text


class Alarms(RegistryModel):
    """Alarm set points; present ones must be ordered low_low < low < high < high_high.

    Empty only for state signals: SensorSpec requires at least one set point on every other
    sensor. An empty Alarms (rather than None) keeps `sensor.alarms.high` etc. safe to read.
    """

    high: Number | None = None
    high_high: Number | None = None
    low: Number | None = None
    low_low: Number | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Alarms:
        present = self.set_points()
        names = list(present)
        for a, b in zip(names, names[1:], strict=False):
            if not present[a] < present[b]:
                raise ValueError(f"set points out of order: {a} {present[a]:g} must be below {b} {present[b]:g}")
        return self

    def set_points(self) -> dict[str, float]:
        """The set points that are present, lowest first."""
        return {k: getattr(self, k) for k in SET_POINT_ORDER if getattr(self, k) is not None}


class SensorSpec(RegistryModel):
    """One sensor as written in the file."""

    id: Ident
    quantity: Annotated[str, Field(pattern=_NAME, max_length=64)]
    unit: str
    range: tuple[Number, Number]
    # Validated even when omitted, so a missing `alarms` on a measuring sensor is reported at the key.
    alarms: Alarms = Field(default_factory=Alarms, validate_default=True)
    deadband: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None = None
    period_s: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    area: Ident
    normal: Number | None = None

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str) -> str:
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} (known: {', '.join(UNITS)})")
        return unit

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, rng: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        if not rng[0] < rng[1]:
            raise ValueError(f"measuring range must have lo < hi, got [{rng[0]:g}, {rng[1]:g}]")
        if info.data.get("unit") == STATE_UNIT and tuple(rng) != (0, 1):
            raise ValueError(f"a state signal (unit {STATE_UNIT}) has range [0, 1], got [{rng[0]:g}, {rng[1]:g}]")
        return rng

    # Cross-field checks are field validators (not a model validator) so the error points at
    # the offending key's line; `info.data` holds `range` only if it was itself valid.
    @field_validator("alarms")
    @classmethod
    def _alarms_in_range(cls, alarms: Alarms, info: ValidationInfo) -> Alarms:
        # A measurement nobody can alarm on is the regulators' "point without threshold" defect;
        # only state signals may go without. Unknown unit (already reported): no second error.
        unit = info.data.get("unit")
        if not alarms.set_points() and unit is not None and unit != STATE_UNIT:
            raise ValueError(
                "at least one set point (high, high_high, low, low_low) is required "
                f"(only state signals, unit {STATE_UNIT}, may have none)"
            )
        rng = info.data.get("range")
        if rng:
            for name, value in alarms.set_points().items():
                if not rng[0] <= value <= rng[1]:
                    raise ValueError(f"{name} {value:g} outside the measuring range [{rng[0]:g}, {rng[1]:g}]")
        return alarms

    @field_validator("deadband")
    @classmethod
    def _deadband_below_span(cls, deadband: float | None, info: ValidationInfo) -> float | None:
        rng = info.data.get("range")
        if deadband is not None and rng and deadband >= rng[1] - rng[0]:
            raise ValueError(f"deadband {deadband:g} is not smaller than the span {rng[1] - rng[0]:g}")
        return deadband

    @field_validator("normal")
    @classmethod
    def _normal_not_in_alarm(cls, normal: float | None, info: ValidationInfo) -> float | None:
        rng, alarms = info.data.get("range"), info.data.get("alarms")
        if normal is None:
            return normal
        if rng and not rng[0] <= normal <= rng[1]:
            raise ValueError(f"normal {normal:g} outside the measuring range [{rng[0]:g}, {rng[1]:g}]")
        if info.data.get("unit") == STATE_UNIT and normal not in (0, 1):
            raise ValueError(f"normal {normal:g} of a state signal must be 0 or 1")
        if alarms:
            for name, value in alarms.set_points().items():
                if (name.startswith("high") and normal >= value) or (name.startswith("low") and normal <= value):
                    raise ValueError(f"normal {normal:g} would be in alarm ({name} {value:g})")
        return normal

    @property
    def is_state(self) -> bool:
        """True for a state signal (unit bool): 0 / 1, no noise, no set points of its own."""
        return self.unit == STATE_UNIT

    @computed_field  # type: ignore[prop-decorator]
    @property
    def deadband_value(self) -> float:
        """The deadband in the sensor's unit, the default applied."""
        return self.deadband if self.deadband is not None else default_deadband(*self.range)


class SiteSpec(RegistryModel):
    """One site as written in the file."""

    id: Ident
    name: Text
    sector: Sector
    kind: Annotated[str, Field(pattern=_NAME, max_length=64)]  # tank_area, tailings_pond, slope, dust_room...
    sensors: list[SensorSpec] = Field(min_length=1)


class EnterpriseSpec(RegistryModel):
    """One enterprise as written in the file."""

    id: Annotated[str, BeforeValidator(_int_to_str)]
    name: Text
    region: RegionCode
    supervision_class: Literal["A", "B", "C", "D"]  # 分类分级 监管类别, A = lightest touch
    sites: list[SiteSpec]

    @field_validator("id")
    @classmethod
    def _credit_code(cls, code: str) -> str:
        try:
            return uscc.validate(code)
        except ValueError as exc:
            raise ValueError(f"bad unified social credit code {code!r}: {exc}") from None


class RegistryFile(RegistryModel):
    """The whole file."""

    regions: list[Region]
    enterprises: list[EnterpriseSpec]


# --- the flat view the rest of the code uses -------------------------------------------------


class Enterprise(RegistryModel):
    """An enterprise, with the ids of its sites and the sectors they belong to."""

    id: str
    name: str
    region: str
    supervision_class: str
    site_ids: tuple[str, ...]
    sectors: tuple[str, ...]


class Site(RegistryModel):
    """A monitored installation of one enterprise."""

    id: str
    name: str
    sector: Sector
    kind: str
    enterprise_id: str
    region: str  # the enterprise's region
    sensor_ids: tuple[str, ...]


class Sensor(SensorSpec):
    """A sensor with its place: site, and (copied for the hot path) sector, enterprise, region."""

    site_id: str
    sector: Sector
    enterprise_id: str
    region: str


@dataclass
class Registry:
    """Flat lookup tables; every dict keeps file order."""

    source: str
    regions: dict[str, Region]
    enterprises: dict[str, Enterprise]
    sites: dict[str, Site]
    sensors: dict[str, Sensor]
    _by_sector: dict[str, list[Site]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_sector = {s: [] for s in SECTORS}
        for site in self.sites.values():
            self._by_sector[site.sector].append(site)

    def sites_by_sector(self, sector: str) -> list[Site]:
        """The sites of one sector, in file order."""
        if sector not in self._by_sector:
            raise ValueError(f"unknown sector {sector!r} (known: {', '.join(SECTORS)})")
        return list(self._by_sector[sector])

    def sensors_of_site(self, site_id: str) -> list[Sensor]:
        """The sensors of one site, in file order; KeyError for an unknown site."""
        return [self.sensors[s] for s in self.sites[site_id].sensor_ids]

    def site_sectors(self) -> dict[str, str]:
        """site id → sector id, e.g. to pick a telemetry topic."""
        return {s.id: s.sector for s in self.sites.values()}


# --- loading and error reporting ----------------------------------------------------------


class RegistryError(ValueError):
    """A registry file that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        lines = [str(i) for i in issues]
        head = [] if len(lines) == 1 else [f"{len(lines)} errors in {issues[0].source}:"]
        super().__init__("\n".join(head + lines))


def load_registry(path: str | Path = DEFAULT_REGISTRY) -> Registry:
    """Read and check a registry file; raise RegistryError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError([Issue(source, None, "", f"cannot read: {exc}")]) from None
    return parse_registry(text, source)


def parse_registry(text: str, source: str = "<string>") -> Registry:
    """Check registry YAML given as text; `source` names it in error messages."""
    data, lines, issues = read_yaml(text, source, "a mapping with `regions` and `enterprises`")
    if data is None:
        raise RegistryError(issues)
    try:
        parsed = RegistryFile.model_validate(data)
    except ValidationError as exc:
        parsed = None
        issues += [issue_from_pydantic(err, lines, source) for err in exc.errors()]
    # Cross-references are checked on the raw data so they are reported even when some
    # entries failed validation above.
    issues += [Issue(source, line_of(loc, lines), dotted(loc), msg) for loc, msg in _cross_reference(data)]
    if issues:
        raise RegistryError(sorted(issues, key=lambda i: (i.line or 0, i.path)))
    assert parsed is not None
    return _flatten(parsed, source)


def _cross_reference(data: dict) -> list[tuple[Loc, str]]:
    """Duplicate ids and undeclared regions, found on the raw data."""
    problems: list[tuple[Loc, str]] = []
    first: dict[tuple[str, str], str] = {}

    def unique(kind: str, value: Any, loc: Loc) -> None:
        value = _int_to_str(value)
        if not isinstance(value, str):
            return
        where = dotted(loc)
        if (kind, value) in first:
            problems.append((loc, f"duplicate {kind} id {value!r} (first at {first[kind, value]})"))
        else:
            first[kind, value] = where

    regions = _list(data.get("regions"))
    for r, region in enumerate(regions):
        if isinstance(region, dict):
            unique("region", region.get("code"), ("regions", r, "code"))
    declared = {str(v) for (kind, v) in first if kind == "region"}

    enterprises = _list(data.get("enterprises"))
    for e, ent in enumerate(enterprises):
        if not isinstance(ent, dict):
            continue
        unique("enterprise", ent.get("id"), ("enterprises", e, "id"))
        code = _int_to_str(ent.get("region"))
        if isinstance(code, str) and re.fullmatch(r"[1-9]\d{5}", code) and code not in declared:
            problems.append((("enterprises", e, "region"), f"region {code!r} is not declared under `regions`"))
        for s, site in enumerate(_list(ent.get("sites"))):
            if not isinstance(site, dict):
                continue
            unique("site", site.get("id"), ("enterprises", e, "sites", s, "id"))
            for n, sensor in enumerate(_list(site.get("sensors"))):
                if isinstance(sensor, dict):
                    unique("sensor", sensor.get("id"), ("enterprises", e, "sites", s, "sensors", n, "id"))
    return problems


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _flatten(parsed: RegistryFile, source: str) -> Registry:
    """Nested file → flat tables."""
    regions = {r.code: r for r in parsed.regions}
    enterprises: dict[str, Enterprise] = {}
    sites: dict[str, Site] = {}
    sensors: dict[str, Sensor] = {}
    for ent in parsed.enterprises:
        for spec in ent.sites:
            sites[spec.id] = Site(
                id=spec.id,
                name=spec.name,
                sector=spec.sector,
                kind=spec.kind,
                enterprise_id=ent.id,
                region=ent.region,
                sensor_ids=tuple(s.id for s in spec.sensors),
            )
            for sen in spec.sensors:
                sensors[sen.id] = Sensor(
                    **sen.model_dump(exclude={"deadband_value"}),
                    site_id=spec.id,
                    sector=spec.sector,
                    enterprise_id=ent.id,
                    region=ent.region,
                )
        enterprises[ent.id] = Enterprise(
            id=ent.id,
            name=ent.name,
            region=ent.region,
            supervision_class=ent.supervision_class,
            site_ids=tuple(s.id for s in ent.sites),
            sectors=tuple(dict.fromkeys(s.sector for s in ent.sites)),
        )
    return Registry(source=source, regions=regions, enterprises=enterprises, sites=sites, sensors=sensors)
