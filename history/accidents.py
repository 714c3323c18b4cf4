"""Accident (事故) records: what happened, where and when, read from CSV or JSON and checked against the registry."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, Field, ValidationError

from rules.models import stable_id
from sensors.registry import Registry

from .filters import FilterError, resolve_enterprise
from .timefmt import RangeError, now_ms, parse_time


class Accident(BaseModel):
    """One recorded accident at an enterprise (optionally one of its sites)."""

    accident_id: str
    enterprise_id: str
    site_id: str | None = None
    ts: int
    type: str
    deaths: int = 0
    injuries: int = 0
    summary: str = ""


class AccidentInput(BaseModel):
    """An accident as entered: enterprise by credit code or name, time as text (local unless an offset is given)."""

    enterprise: Annotated[str, Field(min_length=1, max_length=200)]
    site: str | None = None
    time: Annotated[str, Field(min_length=4, max_length=40)]
    type: Annotated[str, Field(min_length=1, max_length=64)]  # e.g. fire, explosion, poisoning, collapse
    deaths: Annotated[int, Field(ge=0)] = 0
    injuries: Annotated[int, Field(ge=0)] = 0
    summary: Annotated[str, Field(max_length=4000)] = ""


class AccidentError(ValueError):
    """Accident records that cannot be used; one line per problem, naming the record."""


def to_accident(registry: Registry, given: AccidentInput, tz: ZoneInfo) -> Accident:
    """Check an entered accident against the registry; FilterError or RangeError if it names nothing known."""
    enterprise_id = resolve_enterprise(registry, given.enterprise)
    if given.site and registry.sites.get(given.site) is None:
        raise FilterError(f"unknown site {given.site!r}")
    if given.site and registry.sites[given.site].enterprise_id != enterprise_id:
        raise FilterError(f"site {given.site} belongs to another enterprise")
    ts = parse_time(given.time, tz, now_ms())
    if ts > now_ms() + 60_000:
        raise RangeError(f"accident time {given.time!r} is in the future")
    return Accident(
        accident_id=stable_id("acc", enterprise_id, given.site or "", ts, given.type),
        enterprise_id=enterprise_id,
        site_id=given.site or None,
        ts=ts,
        type=given.type,
        deaths=given.deaths,
        injuries=given.injuries,
        summary=given.summary,
    )


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        data = orjson.loads(text)
        if not isinstance(data, list):
            raise AccidentError(f"{path}: a JSON array of accident records is expected")
        return data
    return [{k: v for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(io.StringIO(text))]


def read_accidents(path: Path, registry: Registry, tz: ZoneInfo) -> list[Accident]:
    """Every record of a CSV (enterprise,site,time,type,deaths,injuries,summary) or JSON file; all or none."""
    out: list[Accident] = []
    problems: list[str] = []
    for n, raw in enumerate(_records(path), start=1):
        where = f"{path}: record {n}" + (f" (line {n + 1})" if path.suffix.lower() != ".json" else "")
        try:
            out.append(to_accident(registry, AccidentInput.model_validate(raw), tz))
        except ValidationError as exc:
            problems.extend(f"{where}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        except (FilterError, RangeError) as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        raise AccidentError("\n".join(problems))
    return out
