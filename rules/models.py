"""Hazard and incident events: what the rules emit and the alert service consumes.

Times are epoch milliseconds (event time). Ids are derived from their content so that
replaying the same readings yields the same ids, which is what makes dispatch idempotent.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict

Severity = Literal["red", "orange", "yellow", "blue"]
SEVERITY_RANK: dict[str, int] = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}


def worst(a: str, b: str) -> str:
    """The more severe of two colours."""
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


def stable_id(prefix: str, *parts: object) -> str:
    """A short id derived from its parts: the same inputs give the same id on every run."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()
    return f"{prefix}-{digest}"


class HazardEvent(BaseModel):
    """A rule firing on one sensor opened (`open`), grew worse (`update`) or cleared (`clear`)."""

    model_config = ConfigDict(extra="forbid")
    hazard_id: str
    event: Literal["open", "update", "clear", "suppressed"]
    # high, high_high, low, low_low (or catalogue level kinds), rate_rise, rate_fall, offline,
    # site_offline, stuck, sensor_fault, interlock_failed
    kind: str
    level: int  # 1 = mildest level of its direction; interlock_failed is 4
    severity: Severity
    rule_id: str
    site_id: str
    sensor_id: str  # empty for a site-level hazard (site_offline)
    enterprise_id: str
    region: str
    sector: str
    area: str
    quantity: str
    unit: str
    threshold: float
    value: float | None  # the reading that caused this event
    peak: float | None  # the worst value (or rate) while open
    start: int
    end: int | None = None
    ts: int  # event time of this event
    flapping: bool = False
    flap_count: int = 0
    note: str | None = None  # why it was suppressed, re-published or settled

    def to_json(self) -> bytes:
        """JSON bytes for the `hazards` topic."""
        return orjson.dumps(self.model_dump())


class TimelineEntry(BaseModel):
    """One line of an incident's history."""

    ts: int
    what: str
    hazard_id: str | None = None


class IncidentEvent(BaseModel):
    """Linked hazards on one site (or, for a scope incident, of one enterprise or region): opened,
    updated (new hazard or worse severity) or closed."""

    model_config = ConfigDict(extra="forbid")
    incident_id: str
    status: Literal["open", "update", "closed"]
    severity: Severity
    rule_id: str
    title: str  # the situation now: worst open hazard, how many sensors
    summary: str = ""  # a sentence for people: severity, hazards open, sensors, the rule and what it means
    site_id: str
    site_name: str
    enterprise_id: str
    enterprise_name: str
    region: str
    sector: str
    opened_at: int
    updated_at: int
    closed_at: int | None = None
    hazard_ids: list[str]
    open_hazard_ids: list[str]
    timeline: list[TimelineEntry]
    # "site" for the hot path's incidents; "enterprise", "county", "city" or "province" for the
    # scope stage's, whose `site_id` is empty and `region` is the scope's code (rules/scope.py).
    scope: str = "site"
    scope_key: str = ""

    def to_json(self) -> bytes:
        """JSON bytes for the `incidents` topic."""
        return orjson.dumps(self.model_dump())


class NoticeFault(BaseModel):
    """One instrument hazard a maintenance notice lists: which sensor (or the whole site), what, since when."""

    hazard_id: str
    sensor_id: str  # empty for the whole site (site_offline)
    kind: str  # offline, site_offline, stuck, sensor_fault
    quantity: str
    severity: Severity
    since: int
    flapping: bool = False


class NoticeEvent(BaseModel):
    """A site's maintenance notice: its instrument hazards gathered into one item, never an incident."""

    model_config = ConfigDict(extra="forbid")
    notice_id: str  # stable: site and opening time
    status: Literal["open", "update", "closed"]
    severity: Severity  # the worst colour of its faults (the catalogue's instrument-health colours)
    title: str
    summary: str = ""
    site_id: str
    site_name: str
    enterprise_id: str
    enterprise_name: str
    region: str
    sector: str
    opened_at: int
    updated_at: int
    closed_at: int | None = None
    faults: list[NoticeFault]  # at fault now (at the close: none)
    hazard_ids: list[str]  # every instrument hazard this notice has gathered

    def to_json(self) -> bytes:
        """JSON bytes for the `notices` topic."""
        return orjson.dumps(self.model_dump())
