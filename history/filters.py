"""What an inspector asks for: checked against the registry, turned into an InfluxQL WHERE clause."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from config.topics import SECTORS
from rules.models import SEVERITY_RANK
from sensors.registry import Registry

_SAFE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class FilterError(ValueError):
    """An unknown id or a malformed filter; the message names it."""


@dataclass(frozen=True)
class Filters:
    """A history query: a time range [start_ms, end_ms) and optional filters (all must match)."""

    start_ms: int
    end_ms: int
    enterprise_id: str | None = None
    site_id: str | None = None
    sensor_id: str | None = None
    region: str | None = None  # a prefix of the 6-digit division code: 32 (province), 3201 (city)
    sector: str | None = None
    rule_id: str | None = None
    level: int | None = None  # hazard level (1 = mildest of its direction)
    severity: str | None = None  # red, orange, yellow, blue


def resolve_enterprise(registry: Registry, text: str) -> str:
    """A credit code, or a name (exact, or the one name containing it) → credit code."""
    if text in registry.enterprises:
        return text
    exact = [e.id for e in registry.enterprises.values() if e.name == text]
    if len(exact) == 1:
        return exact[0]
    partial = [e for e in registry.enterprises.values() if text in e.name]
    if len(partial) == 1:
        return partial[0].id
    if partial:
        names = "; ".join(f"{e.id} {e.name}" for e in partial[:5])
        raise FilterError(f"enterprise {text!r} matches {len(partial)} enterprises ({names}): give the credit code")
    raise FilterError(f"unknown enterprise {text!r}: neither a credit code nor a name in the registry")


def make_filters(
    registry: Registry,
    start_ms: int,
    end_ms: int,
    *,
    enterprise: str | None = None,
    site: str | None = None,
    sensor: str | None = None,
    region: str | None = None,
    sector: str | None = None,
    rule: str | None = None,
    level: str | int | None = None,
) -> Filters:
    """Filters from user input; FilterError for anything unknown. `level` is a number or a colour."""
    f = Filters(start_ms, end_ms)
    if enterprise:
        f = replace(f, enterprise_id=resolve_enterprise(registry, enterprise))
    if site:
        if site not in registry.sites:
            raise FilterError(f"unknown site {site!r}")
        f = replace(f, site_id=site)
    if sensor:
        if sensor not in registry.sensors:
            raise FilterError(f"unknown sensor {sensor!r}")
        f = replace(f, sensor_id=sensor)
    if region:
        if not re.fullmatch(r"\d{2,6}", region):
            raise FilterError(f"bad region {region!r}: 2 to 6 digits of a division code (32, 3201, 320115)")
        if not any(code.startswith(region) for code in registry.regions):
            raise FilterError(f"no region in the registry starts with {region!r}")
        f = replace(f, region=region)
    if sector:
        if sector not in SECTORS:
            raise FilterError(f"unknown sector {sector!r} (one of {', '.join(SECTORS)})")
        f = replace(f, sector=sector)
    if rule:
        if not _SAFE.match(rule):
            raise FilterError(f"bad rule id {rule!r}")
        f = replace(f, rule_id=rule)
    if level is not None and level != "":
        text = str(level)
        if text.isdigit():
            f = replace(f, level=int(text))
        elif text in SEVERITY_RANK:
            f = replace(f, severity=text)
        else:
            raise FilterError(f"bad level {text!r}: a number (1, 2, …) or a colour (red, orange, yellow, blue)")
    return f


def quote(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def where(f: Filters, *, fields: bool = True) -> str:
    """The WHERE clause; `fields=False` leaves out rule and level (the `reading` measurement has neither)."""
    parts = [f"time >= {f.start_ms}ms", f"time < {f.end_ms}ms"]
    for tag in ("enterprise_id", "site_id", "sensor_id", "sector", "severity"):
        value = getattr(f, tag)
        if value and (fields or tag != "severity"):
            parts.append(f"{tag} = {quote(value)}")
    if f.region:
        parts.append(f"region =~ /^{f.region}/")
    if fields and f.rule_id:
        parts.append(f"rule_id = {quote(f.rule_id)}")
    if fields and f.level is not None:
        parts.append(f"level = {f.level}")
    return " AND ".join(parts)
