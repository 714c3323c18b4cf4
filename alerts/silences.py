"""Matchers shared by silences (set by people, for a while) and inhibition rules (in the routing
file): which incident messages to hold back. Pure code over the incident's JSON."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rules.models import SEVERITY_RANK, Severity

# Labels an inhibition rule may require equal between the muting and the muted incident.
Label = Literal["site_id", "enterprise_id", "region", "sector", "rule_id"]


class Matcher(BaseModel):
    """Every field given must hold (a list matches any of its values); at least one is required,
    so a silence never mutes everything by accident."""

    model_config = ConfigDict(extra="forbid")
    sectors: list[str] | None = None
    region_prefix: list[str] | None = None
    severities: list[Severity] | None = None
    min_severity: Severity | None = None
    rule_ids: list[str] | None = None
    kinds: list[str] | None = None
    enterprise_ids: list[str] | None = None
    site_ids: list[str] | None = None
    departments: list[str] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Matcher:
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one matcher (a silence of everything is refused)")
        return self

    def matches(self, incident: dict[str, Any], department: str | None = None) -> bool:
        """Whether the incident (its JSON) and, if the matcher names departments, the department match."""
        severity = incident.get("severity", "blue")
        kinds = {str(e.get("what", "")).split(" ", 1)[0] for e in incident.get("timeline", [])}
        region = str(incident.get("region", ""))
        return (
            (self.sectors is None or incident.get("sector") in self.sectors)
            and (self.region_prefix is None or any(region.startswith(p) for p in self.region_prefix))
            and (self.severities is None or severity in self.severities)
            and (self.min_severity is None or SEVERITY_RANK[severity] >= SEVERITY_RANK[self.min_severity])
            and (self.rule_ids is None or incident.get("rule_id") in self.rule_ids)
            and (self.kinds is None or bool(kinds & set(self.kinds)))
            and (self.enterprise_ids is None or incident.get("enterprise_id") in self.enterprise_ids)
            and (self.site_ids is None or incident.get("site_id") in self.site_ids)
            and (self.departments is None or department in self.departments)
        )


class InhibitRule(BaseModel):
    """While an open incident matches `source`, messages about another incident matching `target`
    with the same values of every `equal` label are held (Alertmanager's inhibition)."""

    model_config = ConfigDict(extra="forbid")
    source: Matcher
    target: Matcher
    equal: list[Label] = Field(min_length=1)


class Silence(BaseModel):
    """Messages matching `matcher` between `starts_at` and `ends_at` (epoch ms) are held, on record."""

    silence_id: str
    matcher: Matcher
    starts_at: int
    ends_at: int
    created_by: str
    reason: str
    created_at: int
    expired_at: int | None = None  # ended early by someone

    def active(self, now: int) -> bool:
        """In force at `now`."""
        end = min(self.ends_at, self.expired_at) if self.expired_at is not None else self.ends_at
        return self.starts_at <= now < end


def parse_matchers(pairs: list[str]) -> Matcher:
    """`key=value[,value]` pairs from the command line, e.g. `site_ids=hz-1` `severities=yellow,blue`."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise ValueError(f"matcher {pair!r} is not key=value")
        values = [v.strip() for v in value.split(",") if v.strip()]
        fields[key.strip()] = values[0] if key.strip() == "min_severity" else values
    return Matcher.model_validate(fields)
