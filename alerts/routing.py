"""Which departments an incident goes to: the routing file, its validation and `route()`.

The file is configuration, not code: the chain of departments and the acknowledge deadlines
are set by each province's operating rules (docs/standards.md §10 found no national numbers).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from alerts.silences import InhibitRule
from config.topics import SECTORS
from rules.models import SEVERITY_RANK, IncidentEvent, Severity
from sensors.yamlsource import Issue, dotted, issue_from_pydantic, line_of, read_yaml

# Department ids appear in URLs (/inbox/{department}) and in the task id, so keep them plain.
DepartmentId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
M = TypeVar("M", bound=BaseModel)
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
log = logging.getLogger(__name__)


class RoutingError(ValueError):
    """A routing file that cannot be used; `issues` name the file, line and field of each problem."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(map(str, issues)))
        self.issues = issues


Level = Literal["enterprise", "county", "city", "province"]
CHAIN: tuple[str, ...] = ("enterprise", "county", "city", "province")  # the escalation chain, lowest first


class Robot(BaseModel):
    """A chat group robot (WeCom, DingTalk or Feishu). Its URL carries its key, so it may come
    from an environment variable (`url_env`) instead of the file; so does its signing secret."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, min_length=1)
    url_env: str | None = Field(None, pattern=ENV_NAME)
    secret_env: str | None = Field(None, pattern=ENV_NAME)
    at_mobiles: list[Annotated[str, Field(pattern=r"^\+?[0-9]{5,20}$")]] = []  # DingTalk @-mentions
    _url: str = PrivateAttr("")
    _secret: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _one_url(self) -> Robot:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give url or url_env (exactly one)")
        return self

    @property
    def target(self) -> str:
        """The robot's URL (resolved from its environment variable if so configured)."""
        return self._url

    @property
    def secret(self) -> str | None:
        """The robot's signing secret, if any."""
        return self._secret


ROBOTS = ("wecom", "dingtalk", "feishu")


class Department(BaseModel):
    """A body that must act on incidents, reached by an HTTP webhook.

    `level` and `region` place it in the escalation chain: the level it answers at and the
    region code prefix it covers. A department without a level (fire-rescue, environment)
    is outside the chain; its unacknowledged tasks escalate to the province level.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    webhook: str | None = Field(None, min_length=1)
    email: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] | None = Field(None, min_length=1)
    wecom: Robot | None = None
    dingtalk: Robot | None = None
    feishu: Robot | None = None
    sms: list[Annotated[str, Field(pattern=r"^\+?[0-9]{5,20}$")]] | None = Field(None, min_length=1)
    level: Level | None = None
    region: str | None = Field(None, pattern=r"^[0-9]{2,6}$")
    # The NAME of an environment variable holding this department's HMAC key (never the key:
    # the routing file is configuration anyone may read). Overrides the file's webhook_secret_env.
    secret_env: str | None = Field(None, pattern=ENV_NAME)
    _secret: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _reachable(self) -> Department:
        if not self.channels:
            raise ValueError("a department needs at least one channel: webhook, email, wecom, dingtalk, feishu or sms")
        return self

    @property
    def channels(self) -> list[str]:
        """The channels it is told on, in sending order."""
        return [c for c in ("webhook", "email", *ROBOTS, "sms") if getattr(self, c) is not None]

    def robot(self, channel: str) -> Robot | None:
        """The robot of a robot channel."""
        return getattr(self, channel) if channel in ROBOTS else None

    @property
    def secret(self) -> str | None:
        """The HMAC key webhooks to this department are signed with, if any."""
        return self._secret


class AckMinutes(BaseModel):
    """Minutes a department has to acknowledge a task, per incident severity."""

    model_config = ConfigDict(extra="forbid")
    red: float = Field(5, gt=0)
    orange: float = Field(15, gt=0)
    yellow: float = Field(30, gt=0)
    blue: float = Field(60, gt=0)


class AckOverride(BaseModel):
    """Acknowledge minutes a route changes for its subtree (the others are inherited)."""

    model_config = ConfigDict(extra="forbid")
    red: float | None = Field(None, gt=0)
    orange: float | None = Field(None, gt=0)
    yellow: float | None = Field(None, gt=0)
    blue: float | None = Field(None, gt=0)


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_one_or_many)]


class Route(BaseModel):
    """One node of the routing tree: matchers, the departments it adds, settings, child routes.

    Every matcher given must hold (a list matches any of its values); none given matches all.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    sectors: StrList | None = None
    region_prefix: StrList | None = None
    min_severity: Severity | None = None
    severities: list[Severity] | None = None
    supervision_classes: list[Literal["A", "B", "C", "D"]] | None = None
    rule_ids: StrList | None = None
    kinds: StrList | None = None  # hazard kinds in the incident (high_high, interlock_failed, …)
    departments: list[DepartmentId] = []
    continue_: bool = Field(False, alias="continue")
    ack_minutes: AckOverride | None = None
    send_resolved: bool | None = None
    routes: list[Route] = []
    routes_file: str | None = None  # child routes (and their departments) from another file

    @field_validator("sectors")
    @classmethod
    def _known_sectors(cls, sectors: list[str] | None) -> list[str] | None:
        if sectors is None or sectors == ["*"]:
            return sectors
        unknown = [s for s in sectors if s not in SECTORS]
        if unknown:
            raise ValueError(f"unknown sector(s) {unknown}; use {list(SECTORS)} or ['*'] alone")
        return sectors

    @field_validator("region_prefix")
    @classmethod
    def _digits(cls, prefixes: list[str] | None) -> list[str] | None:
        for p in prefixes or []:
            if not re.fullmatch(r"[0-9]{1,6}", p):
                raise ValueError(f"region prefix {p!r} must be 1 to 6 digits of a region code")
        return prefixes

    def matches(self, facts: IncidentFacts) -> bool:
        """Whether every matcher of this node holds for the incident."""
        rank = SEVERITY_RANK[facts.severity]
        return (
            (self.sectors is None or self.sectors == ["*"] or facts.sector in self.sectors)
            and (self.region_prefix is None or any(facts.region.startswith(p) for p in self.region_prefix))
            and (self.min_severity is None or rank >= SEVERITY_RANK[self.min_severity])
            and (self.severities is None or facts.severity in self.severities)
            and (self.supervision_classes is None or facts.supervision_class in self.supervision_classes)
            and (self.rule_ids is None or facts.rule_id in self.rule_ids)
            and (self.kinds is None or bool(set(self.kinds) & set(facts.kinds)))
        )


class RoutesFile(BaseModel):
    """A file of child routes (`routes_file:`), e.g. the generated per-county routes."""

    model_config = ConfigDict(extra="forbid")
    departments: dict[DepartmentId, Department] = {}
    routes: list[Route] = Field(min_length=1)


class Routing(BaseModel):
    """The whole routing file: defaults, departments and the top of the tree."""

    model_config = ConfigDict(extra="forbid")
    ack_minutes: AckMinutes = AckMinutes()
    send_resolved: bool = True
    webhook_secret_env: str | None = Field(None, pattern=ENV_NAME)  # default HMAC key's variable
    departments: dict[DepartmentId, Department] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    inhibit_rules: list[InhibitRule] = []

    def ack_minutes_for(self, severity: str) -> float:
        """The default acknowledge deadline, in minutes, for an incident of this severity."""
        return getattr(self.ack_minutes, severity)

    def channels_of(self, department: str) -> list[str]:
        """The channels a department is told on (a department no longer in the file: its webhook,
        which the delivery then reports as failed)."""
        dept = self.departments.get(department)
        return dept.channels if dept is not None else ["webhook"]


@dataclass(frozen=True)
class IncidentFacts:
    """What routes match on: the incident's own fields plus its enterprise's supervision class."""

    sector: str
    region: str
    severity: str
    rule_id: str
    supervision_class: str | None
    kinds: tuple[str, ...]


def facts_of(incident: IncidentEvent, supervision_class: str | None = None) -> IncidentFacts:
    """The routing facts of an incident; hazard kinds are the first word of its timeline entries."""
    kinds = tuple(dict.fromkeys(e.what.split(" ", 1)[0] for e in incident.timeline if e.what))
    return IncidentFacts(
        sector=incident.sector,
        region=incident.region,
        severity=incident.severity,
        rule_id=incident.rule_id,
        supervision_class=supervision_class,
        kinds=kinds,
    )


@dataclass(frozen=True)
class Match:
    """A department an incident goes to, with the settings of the route that chose it."""

    department: str
    ack_minutes: AckMinutes
    send_resolved: bool


def route_matches(incident: IncidentEvent | IncidentFacts, routing: Routing) -> list[Match]:
    """Every department the incident goes to, in order of first appearance.

    Walk: a matching node adds its departments and then tries its children in order; after a
    matching child whose `continue` is false, its later siblings are not tried (Alertmanager's
    rule). Unlike Alertmanager, departments add up along the path: a city route under the
    province route notifies both. Settings (ack_minutes, send_resolved) are inherited down.
    """
    facts = incident if isinstance(incident, IncidentFacts) else facts_of(incident)
    chosen: dict[str, Match] = {}
    _walk(routing.routes, facts, routing.ack_minutes, routing.send_resolved, chosen)
    return list(chosen.values())


def _walk(routes: list[Route], facts: IncidentFacts, ack: AckMinutes, resolved: bool, chosen: dict[str, Match]) -> None:
    for node in routes:
        if not node.matches(facts):
            continue
        node_ack = ack.model_copy(update=node.ack_minutes.model_dump(exclude_none=True)) if node.ack_minutes else ack
        node_resolved = resolved if node.send_resolved is None else node.send_resolved
        for dept in node.departments:
            chosen.setdefault(dept, Match(dept, node_ack, node_resolved))
        _walk(node.routes, facts, node_ack, node_resolved, chosen)
        if not node.continue_:
            break


def route(incident: IncidentEvent | IncidentFacts, routing: Routing) -> list[str]:
    """Department ids the incident goes to, in order of first appearance."""
    return [m.department for m in route_matches(incident, routing)]


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
    """Read and check a routing file (and the `routes_file`s it names); `${ALERTS_API}` in
    webhooks becomes `alerts_api`. Raises RoutingError listing every problem as FILE:LINE: field: message."""
    path = Path(path)
    routing, lines = _parse(path, Routing, "a mapping with departments and routes")
    issues: list[Issue] = []
    files: list[tuple[Path, dict, dict[str, Department], list[tuple[tuple, Route]]]] = []
    main_nodes = list(_nodes(routing.routes, ("routes",)))
    files.append((path, lines, dict(routing.departments), main_nodes))
    for loc, node in main_nodes:
        if node.routes_file is None:
            continue
        if node.routes:
            issues.append(
                Issue(
                    str(path),
                    line_of(loc, lines),
                    dotted((*loc, "routes_file")),
                    "give routes or routes_file, not both",
                )
            )
            continue
        sub = (path.parent / node.routes_file).resolve()
        try:
            included, sub_lines = _parse(sub, RoutesFile, "a mapping with departments and routes")
        except RoutingError as exc:
            issues.extend(exc.issues)
            continue
        for dept_id in included.departments:
            if dept_id in routing.departments:
                issues.append(
                    Issue(
                        str(sub),
                        line_of(("departments", dept_id), sub_lines),
                        f"departments.{dept_id}",
                        f"department {dept_id!r} is defined in {path} too",
                    )
                )
        sub_nodes = list(_nodes(included.routes, ("routes",)))
        if any(n.routes_file for _, n in sub_nodes):
            issues.append(Issue(str(sub), 1, "", "a routes_file may not name another routes_file"))
        routing.departments.update(included.departments)
        node.routes = included.routes
        files.append((sub, sub_lines, included.departments, sub_nodes))
    for source, file_lines, departments, nodes in files:
        problems = _cross_check(routing, departments, nodes, alerts_api)
        issues.extend(Issue(str(source), line_of(loc, file_lines), dotted(loc), msg) for loc, msg in problems)
    if issues:
        raise RoutingError(issues)
    return routing


def _parse(path: Path, model: type[M], expected: str) -> tuple[M, dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError([Issue(str(path), None, "", f"cannot read routing file: {exc.strerror or exc}")]) from exc
    data, lines, issues = read_yaml(text, str(path), expected=expected)
    if issues:
        raise RoutingError(issues)
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        raise RoutingError([issue_from_pydantic(e, lines, str(path)) for e in exc.errors()]) from None


def all_routes(routing: Routing) -> list[tuple[tuple, Route]]:
    """Every route of the tree with its location (`("routes", 0, "routes", 2)`), parents first."""
    return list(_nodes(routing.routes, ("routes",)))


def _nodes(routes: list[Route], loc: tuple) -> Iterator[tuple[tuple, Route]]:
    """Every node of a tree with its location in the file, parents first."""
    for i, node in enumerate(routes):
        yield (*loc, i), node
        yield from _nodes(node.routes, (*loc, i, "routes"))


def _cross_check(
    routing: Routing, departments: dict[str, Department], nodes: list[tuple[tuple, Route]], alerts_api: str
) -> list[tuple[tuple, str]]:
    """Expand one file's webhooks in place and find references to departments not defined anywhere."""
    problems: list[tuple[tuple, str]] = []
    for dept_id, dept in departments.items():
        loc = ("departments", dept_id, "webhook")
        if dept.webhook is not None:
            unknown = [name for name in PLACEHOLDER.findall(dept.webhook) if name != "ALERTS_API"]
            if unknown:
                problems.append((loc, f"unknown placeholder(s) {unknown}; only ${{ALERTS_API}} is replaced"))
                continue
            dept.webhook = dept.webhook.replace("${ALERTS_API}", alerts_api.rstrip("/"))
            if not dept.webhook.startswith(("http://", "https://")):
                problems.append((loc, f"webhook must be an http(s) URL, got {dept.webhook!r}"))
        for kind in ROBOTS:
            robot: Robot | None = getattr(dept, kind)
            if robot is None:
                continue
            loc_robot = ("departments", dept_id, kind)
            if robot.url_env:
                robot._url = os.environ.get(robot.url_env) or ""
                if not robot._url:
                    problems.append(
                        ((*loc_robot, "url_env"), f"environment variable {robot.url_env} is not set or empty")
                    )
            else:
                robot._url = (robot.url or "").replace("${ALERTS_API}", alerts_api.rstrip("/"))
            if robot._url and not robot._url.startswith(("http://", "https://")):
                problems.append((loc_robot, f"{kind} robot URL must be http(s) (from {robot.url_env or 'url'})"))
            if robot.secret_env:
                robot._secret = os.environ.get(robot.secret_env) or None
                if robot._secret is None:
                    problems.append(
                        ((*loc_robot, "secret_env"), f"environment variable {robot.secret_env} is not set or empty")
                    )
        env = dept.secret_env or routing.webhook_secret_env
        if env and dept.webhook is not None:
            dept._secret = os.environ.get(env) or None
            if dept._secret is None:
                where = ("departments", dept_id, "secret_env") if dept.secret_env else ("webhook_secret_env",)
                problems.append((where, f"environment variable {env} (the HMAC key) is not set or empty"))
    for loc, node in nodes:
        for j, dept_id in enumerate(node.departments):
            if dept_id not in routing.departments:
                problems.append(((*loc, "departments", j), f"department {dept_id!r} is not defined under departments"))
    return problems


class LiveRouting:
    """The routing in force, reloaded when its file (or a routes_file) changes.

    A changed file is checked in full first; with any error the old routing stays and every
    error is logged with file, line and field (like the rule catalogue's reload).
    """

    def __init__(self, path: Path | str, alerts_api: str) -> None:
        self.path = Path(path)
        self.alerts_api = alerts_api
        self.current = load_routing(self.path, alerts_api=alerts_api)
        self._stamp = self._files_stamp()

    def _files_stamp(self) -> tuple:
        files = [self.path] + [
            (self.path.parent / node.routes_file).resolve() for _, node in all_routes(self.current) if node.routes_file
        ]
        stamp: list[tuple[str, int | None, int | None]] = []
        for f in files:
            try:
                st = f.stat()
                stamp.append((str(f), st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append((str(f), None, None))
        return tuple(stamp)

    def reload_if_changed(self) -> bool:
        """Swap in the file's new routing if it changed and is valid; True when swapped."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            new = load_routing(self.path, alerts_api=self.alerts_api)
        except RoutingError as exc:
            log.error("routing %s changed but is not valid; the old routing stays:\n%s", self.path, exc)
            return False
        old = self.current
        self.current = new
        self._stamp = self._files_stamp()  # a new routes_file may be named now
        added = sorted(set(new.departments) - set(old.departments))
        removed = sorted(set(old.departments) - set(new.departments))
        log.info(
            "routing %s reloaded: %d departments (added %s, removed %s), %d routes",
            self.path,
            len(new.departments),
            added or "none",
            removed or "none",
            len(all_routes(new)),
        )
        return True
