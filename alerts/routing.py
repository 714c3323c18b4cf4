"""Which departments an incident goes to: the routing file, its validation and `route()`.

The file is configuration, not code: the chain of departments and the acknowledge deadlines
are set by each province's operating rules (docs/standards.md §10 found no national numbers).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config.topics import SECTORS
from rules.models import SEVERITY_RANK, IncidentEvent, Severity
from sensors.yamlsource import Issue, dotted, issue_from_pydantic, line_of, read_yaml

# Department ids appear in URLs (/inbox/{department}) and in the task id, so keep them plain.
DepartmentId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


class RoutingError(ValueError):
    """A routing file that cannot be used; the message names the file, line and field."""


Level = Literal["enterprise", "county", "city", "province"]
CHAIN: tuple[str, ...] = ("enterprise", "county", "city", "province")  # the escalation chain, lowest first


class Department(BaseModel):
    """A body that must act on incidents, reached by an HTTP webhook.

    `level` and `region` place it in the escalation chain: the level it answers at and the
    region code prefix it covers. A department without a level (fire-rescue, environment)
    is outside the chain; its unacknowledged tasks escalate to the province level.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    webhook: str = Field(min_length=1)
    level: Level | None = None
    region: str | None = Field(None, pattern=r"^[0-9]{2,6}$")


class AckMinutes(BaseModel):
    """Minutes a department has to acknowledge a task, per incident severity."""

    model_config = ConfigDict(extra="forbid")
    red: float = Field(5, gt=0)
    orange: float = Field(15, gt=0)
    yellow: float = Field(30, gt=0)
    blue: float = Field(60, gt=0)


class Route(BaseModel):
    """Incidents of these sectors, in this region, at least this severe go to these departments."""

    model_config = ConfigDict(extra="forbid")
    sectors: list[str] = Field(min_length=1)
    region_prefix: str | None = Field(None, pattern=r"^[0-9]{1,6}$")
    min_severity: Severity = "blue"
    departments: list[DepartmentId] = Field(min_length=1)

    @field_validator("sectors")
    @classmethod
    def _known_sectors(cls, sectors: list[str]) -> list[str]:
        if sectors == ["*"]:
            return sectors
        unknown = [s for s in sectors if s not in SECTORS]
        if unknown:
            raise ValueError(f"unknown sector(s) {unknown}; use {list(SECTORS)} or ['*'] alone")
        return sectors


class Routing(BaseModel):
    """The whole routing file."""

    model_config = ConfigDict(extra="forbid")
    ack_minutes: AckMinutes = AckMinutes()
    departments: dict[DepartmentId, Department] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)

    def ack_minutes_for(self, severity: str) -> float:
        """The acknowledge deadline, in minutes, of a task for an incident of this severity."""
        return getattr(self.ack_minutes, severity)


def route(incident: IncidentEvent, routing: Routing) -> list[str]:
    """Department ids of every route the incident matches, in order of first appearance."""
    rank = SEVERITY_RANK[incident.severity]
    chosen: dict[str, None] = {}  # a dict keeps insertion order and drops repeats
    for r in routing.routes:
        if r.sectors != ["*"] and incident.sector not in r.sectors:
            continue
        if r.region_prefix and not incident.region.startswith(r.region_prefix):
            continue
        if rank < SEVERITY_RANK[r.min_severity]:
            continue
        chosen.update(dict.fromkeys(r.departments))
    return list(chosen)


def escalation_target(routing: Routing, department: str, region: str) -> str | None:
    """The department one level up the chain from `department` for an incident in `region`, or None.

    The next level is the first level above the department's own (levels with no department
    covering the region are skipped); at that level the department whose `region` is the
    longest prefix of the incident's region code wins.
    """
    own = routing.departments.get(department)
    start = CHAIN.index(own.level) + 1 if own is not None and own.level is not None else len(CHAIN) - 1
    for level in CHAIN[start:]:
        covering = [
            (len(d.region or ""), dept_id)
            for dept_id, d in routing.departments.items()
            if d.level == level and region.startswith(d.region or "") and dept_id != department
        ]
        if covering:
            return max(covering)[1]
    return None


def escalation_path(routing: Routing, department: str, region: str) -> list[str]:
    """Every department above `department` in the chain for `region`, lowest first."""
    path: list[str] = []
    current = escalation_target(routing, department, region)
    while current is not None and current not in path:
        path.append(current)
        current = escalation_target(routing, current, region)
    return path


def load_routing(path: Path | str, *, alerts_api: str) -> Routing:
    """Read and check a routing file; `${ALERTS_API}` in webhooks becomes `alerts_api`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError(f"{path}: cannot read routing file: {exc.strerror or exc}") from exc
    data, lines, issues = read_yaml(text, str(path), expected="a mapping with departments and routes")
    if issues:
        raise RoutingError("\n".join(map(str, issues)))
    try:
        routing = Routing.model_validate(data)
    except ValidationError as exc:
        raise RoutingError("\n".join(str(issue_from_pydantic(e, lines, str(path))) for e in exc.errors())) from None
    problems = _cross_check(routing, alerts_api)
    if problems:
        raise RoutingError(
            "\n".join(str(Issue(str(path), line_of(loc, lines), dotted(loc), msg)) for loc, msg in problems)
        )
    return routing


def _cross_check(routing: Routing, alerts_api: str) -> list[tuple[tuple, str]]:
    """Expand webhooks in place and find references to departments that are not defined."""
    problems: list[tuple[tuple, str]] = []
    for dept_id, dept in routing.departments.items():
        loc = ("departments", dept_id, "webhook")
        unknown = [name for name in PLACEHOLDER.findall(dept.webhook) if name != "ALERTS_API"]
        if unknown:
            problems.append((loc, f"unknown placeholder(s) {unknown}; only ${{ALERTS_API}} is replaced"))
            continue
        dept.webhook = dept.webhook.replace("${ALERTS_API}", alerts_api.rstrip("/"))
        if not dept.webhook.startswith(("http://", "https://")):
            problems.append((loc, f"webhook must be an http(s) URL, got {dept.webhook!r}"))
    for i, r in enumerate(routing.routes):
        for j, dept_id in enumerate(r.departments):
            if dept_id not in routing.departments:
                problems.append(
                    (("routes", i, "departments", j), f"department {dept_id!r} is not defined under departments")
                )
    return problems
